import ActorVmm
import Boot
import CKvm
import Devices
import EpollLoop
import Synchronization

/// Why a device could not be attached or detached.
public enum DeviceManagerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The id names a device already in the tree.
    case idInUse(String)
    /// No device has this id (or it is part of the machine and cannot be detached).
    case unknownDevice(String)
    /// Every PCI slot of bus 0 is taken.
    case noFreeSlot
    /// The 32-bit PCI window has no room left for a BAR of `size` bytes.
    case noBarSpace(size: UInt64)
    /// The vCPUs run on a bus snapshot that cannot be replaced yet (see ``DeviceManager/publish(to:)``).
    case busesFrozen
    case bus(BusError)
    case host(String)

    public var description: String {
        switch self {
        case .idInUse(let id): "device id \(id) is already in use"
        case .unknownDevice(let id): "no device with id \(id)"
        case .noFreeSlot: "no free PCI slot (bus 0 holds 31 devices)"
        case .noBarSpace(let size): "no room for a \(size)-byte BAR in the PCI window"
        case .busesFrozen: "the vCPUs are running and their buses cannot change"
        case .bus(let error): error.description
        case .host(let reason): reason
        }
    }
}

/// Where a VM's PCI resources go: the MMCONFIG area (4 KiB per function of bus 0) and the 32-bit window BARs
/// are allocated from (the same addresses the ACPI tables describe; docs/devices.md).
public struct PciLayout: Sendable {
    public var mmconfigBase: UInt64
    public var barWindow: Range<UInt64>

    public static let standard = PciLayout(mmconfigBase: Layout.pciMmconfigStart,
                                           barWindow: Layout.pciMmio32Start..<(Layout.pciMmio32Start + Layout.pciMmio32Size))

    public init(mmconfigBase: UInt64, barWindow: Range<UInt64>) {
        self.mmconfigBase = mmconfigBase
        self.barWindow = barWindow
    }
}

/// The one place that puts devices into a VM and takes them out again: it owns the VM's device tree (ids,
/// PCI addresses, BARs, bus ranges, MSI-X vectors), the PIO and MMIO buses the vCPUs dispatch on, the PCI
/// slot and BAR allocators, and for each device what its attachment set up (bus ranges, ioeventfds, vectors,
/// its actor and loop), so that ``detach(id:)`` undoes exactly that.
///
/// The buses are immutable snapshots (``buses``); every change makes a new one. Before the vCPUs start,
/// the machine builder hands the last snapshot to the ``VcpuManager``. Once they run, a change is only
/// allowed when a ``BusPublisher`` has been given (``publish(to:)``): it swaps the snapshot the vCPU threads
/// read. Thread-safe: the state is behind one mutex, and the async steps (a device's loop registrations, its
/// stop) happen outside it. The async methods are `nonisolated(nonsending)`: they run on the caller's
/// executor (`vmm-main` for the VMM), never on an API request's `vmm-api` loop, whose seccomp filter has no
/// KVM in it.
public final class DeviceManager: Sendable {
    /// The id of the PCI root (host bridge, configuration ports, MMCONFIG windows).
    public static let pciRootID = "pci"

    public let vm: Vm
    public let memory: GuestMemory
    public let layout: PciLayout
    /// The VM's GSI routing table, shared by every MSI-X device.
    public let msiRouter: GsiRouter
    private let state: Mutex<State>

    /// What one attachment set up, in the order it was set up.
    struct Attachment: Sendable {
        var pioBases: [UInt64] = []
        var mmioBases: [UInt64] = []
        var slot: Int?
        var bar: Range<UInt64>?
        var ioeventfds: [(fd: Int32, address: UInt64, length: UInt32)] = []
        var vectors: [any MsiTarget] = []
        var virtio: VirtioPciDevice?
        /// Loops made for this device alone (its own, its queue workers'): shut down when it goes.
        var loops: [EventLoop] = []
        /// Tree nodes of this device (the device first).
        var nodes: [String] = []
    }

    struct State: Sendable {
        var tree = DeviceTree()
        /// The buses without the configuration ports (which change with ``functions``).
        var pio = Bus()
        var mmio = Bus()
        /// Configuration windows of bus 0 by slot, and slots reserved by an attach in progress.
        var functions = [BusTarget?](repeating: nil, count: 32)
        var reservedSlots: Set<Int> = []
        /// Mechanism #1 over ``functions``, remade when they change; its accesses counted in one object.
        var configPorts = PciConfigPorts(functions: [])
        /// CONFIG_ADDRESS, one for the machine: every remade ``configPorts`` shares it.
        let configAddress = PciConfigAddress()
        let configPortsCounters = DeviceCounters()
        /// What the vCPUs dispatch on: the last committed state.
        var snapshot = IoBuses()
        var bars: BarAllocator
        var attachments: [String: Attachment] = [:]
        /// Cloud Hypervisor's `device_id_cnt`: one counter for every generated id.
        var idCounter = 0
        var frozen = false
        var publisher: (any BusPublisher)?
    }

    /// A manager for `vm` with the PCI root in place: the host bridge (slot 0, on `loop`) and the
    /// configuration ports.
    public init(vm: Vm, memory: GuestMemory, loop: EventLoop, layout: PciLayout = .standard) throws(DeviceManagerError) {
        self.vm = vm
        self.memory = memory
        self.layout = layout
        msiRouter = GsiRouter(vm: vm)
        var state = State(bars: BarAllocator(window: layout.barWindow))
        state.tree.insert(DeviceNode(id: Self.pciRootID, resources: [.pioRange(base: PciConfigPorts.port, size: PciConfigPorts.size)]))
        var attachment = Attachment()
        try Self.addFunction(&state, &attachment, slot: 0, PciHostBridge(loop: loop), layout: layout)
        state.attachments[Self.pciRootID] = attachment
        Self.commit(&state, functionsChanged: true)
        self.state = Mutex(state)
    }

    // MARK: - Reading

    /// The buses with every attached device: what the vCPU threads dispatch on.
    public var buses: IoBuses { state.withLock { $0.snapshot } }

    /// The device tree (a copy).
    public var tree: DeviceTree { state.withLock { $0.tree } }

    /// Every node in attachment order (for `vm.info`, a snapshot, a migration).
    public func walk(_ body: (DeviceNode) throws -> Void) rethrows {
        for node in tree.nodes { try body(node) }
    }

    /// The virtio devices by id, in attachment order.
    public var virtioDevices: [(id: String, device: VirtioPciDevice)] {
        state.withLock { state in
            state.tree.nodes.compactMap { node in state.attachments[node.id]?.virtio.map { (node.id, $0) } }
        }
    }

    /// A new id `prefix` + N, N from one counter for all generated ids, skipping ids in use and those in
    /// `avoiding` (ids the config gives devices not attached yet): Cloud Hypervisor's `next_device_name`
    /// (`_disk0`, `_net1`, …).
    public func nextID(prefix: String, avoiding: Set<String> = []) -> String {
        state.withLock { state in
            while true {
                let id = "\(prefix)\(state.idCounter)"
                state.idCounter += 1
                if !state.tree.contains(id) && !avoiding.contains(id) { return id }
            }
        }
    }

    /// The ids of the devices ActorVMM puts at fixed addresses (and of the PCI root): not for a user's device.
    public static let platformIDs: Set<String> = [pciRootID, "serial", "i8042", "debug-port", "acpi-power", "test-device",
                                                  "acpi-ged", "acpi-pci-hotplug", "acpi-cpu-hotplug", "acpi-memory-hotplug"]

    // MARK: - Attaching

    /// Puts a device that has fixed addresses (a legacy PC device, the test device) on the buses.
    public func attachPlatformDevice(id: String, pio: [(base: UInt64, size: UInt64)] = [],
                                     mmio: [(base: UInt64, size: UInt64)] = [], _ target: BusTarget) throws(DeviceManagerError) {
        try state.withLock { state throws(DeviceManagerError) in
            guard !state.frozen || state.publisher != nil else { throw .busesFrozen }
            guard !state.tree.contains(id) else { throw .idInUse(id) }
            var next = state, attachment = Attachment(nodes: [id])
            do throws(BusError) {
                for range in pio {
                    next.pio = try next.pio.inserting(name: id, base: range.base, size: range.size, target)
                    attachment.pioBases.append(range.base)
                }
                for range in mmio {
                    next.mmio = try next.mmio.inserting(name: id, base: range.base, size: range.size, target)
                    attachment.mmioBases.append(range.base)
                }
            } catch {
                throw .bus(error)
            }
            next.tree.insert(DeviceNode(id: id, resources: pio.map { .pioRange(base: $0.base, size: $0.size) }
                                                    + mmio.map { .mmioRange(base: $0.base, size: $0.size) }))
            next.attachments[id] = attachment
            Self.commit(&next, functionsChanged: false)
            state = next
        }
    }

    /// Creates a virtio device with `backend` on `loop` and attaches it as `id` in the first free PCI slot:
    /// a BAR from the PCI window, one MSI-X vector per queue plus one, a doorbell ioeventfd per queue, its
    /// configuration window and BAR on the buses, and the doorbells watched on `loop`. All or nothing: on
    /// failure whatever was set up is undone.
    ///
    /// `workers` (per-queue placement) puts each group of queues on a queue worker of its own loop, with a
    /// backend of its own. `ownedLoops` (`loop` and the workers' loops when made for this device) are the
    /// device manager's from here: shut down when the device is detached or the attach fails.
    nonisolated(nonsending) public func attachVirtio(id: String, backend: sending any VirtioDeviceModel, loop: EventLoop,
                                                     workers: [QueueWorkerPlan] = [],
                                                     ownedLoops: [EventLoop] = []) async throws(DeviceManagerError) -> VirtioPciDevice {
        let queueCount = backend.queueCount, type = backend.deviceType
        // Reserve the id, the slot and the BAR first, so that a concurrent attach takes others.
        let slot: Int, bar: Range<UInt64>
        do throws(DeviceManagerError) {
            (slot, bar) = try reserveSlotAndBar(id: id)
        } catch {
            for loop in ownedLoops { loop.shutdown() }
            throw error
        }
        var attachment = Attachment(slot: slot, bar: bar, loops: ownedLoops)
        do throws(DeviceManagerError) {
            do throws(KvmError) {
                attachment.vectors = try msiRouter.allocate(count: queueCount + 1)
            } catch {
                throw .host("cannot allocate MSI-X vectors: \(error)")
            }
            let device: VirtioPciDevice
            do throws(Errno) {
                device = try VirtioPciDevice(name: id, loop: loop, memory: memory, backend: backend, barAddress: bar.lowerBound,
                                             vectors: attachment.vectors, msiController: msiRouter)
            } catch {
                throw .host("cannot create the device's doorbells: \(error)")
            }
            attachment.virtio = device
            try await makeWorkers(workers, for: device, vectors: attachment.vectors)
            for queue in 0..<queueCount {
                try registerDoorbell(&attachment, fd: device.notifyFDs[queue], address: device.notifyAddress(queue: queue))
            }
            do throws(Errno) {
                try await device.watchDoorbells()
            } catch {
                throw .host("cannot watch the device's doorbells: \(error)")
            }
            let transport = "_virtio-pci-\(id)"
            attachment.nodes = [id, transport]
            try state.withLock { state throws(DeviceManagerError) in
                var next = state
                try Self.addFunction(&next, &attachment, slot: slot, device, layout: layout)
                do throws(BusError) {
                    next.mmio = try next.mmio.inserting(name: id, base: bar.lowerBound, size: VirtioPciDevice.barSize, .device(device))
                } catch {
                    throw .bus(error)
                }
                attachment.mmioBases.append(bar.lowerBound)
                next.tree.insert(DeviceNode(id: id, loop: loop.name))
                next.tree.insert(DeviceNode(id: transport,
                                            resources: [.pciBar(index: 0, base: bar.lowerBound, size: VirtioPciDevice.barSize)]
                                                + attachment.vectors.map { .msiVector(gsi: $0.gsi) },
                                            parent: id, pciBdf: PciBdf(device: UInt8(slot)),
                                            ioeventfds: attachment.ioeventfds.map { .init(address: $0.address, length: $0.length) },
                                            loop: loop.name))
                next.attachments[id] = attachment
                next.reservedSlots.remove(slot)
                Self.commit(&next, functionsChanged: true)
                state = next
            }
            let queueLoops = workers.isEmpty ? "" : ", queues on \(workers.map(\.loop.name).joined(separator: " "))"
            Log.info("PCI 00:\(slot).0: virtio \(type) '\(id)', BAR0 \(hex(bar.lowerBound)), loop \(loop.name)\(queueLoops)")
            return device
        } catch {
            await undo(attachment)
            state.withLock { state in
                state.reservedSlots.remove(slot)
                state.bars.free(bar)
                state.attachments[id] = nil
            }
            throw error
        }
    }

    /// Reserves `id`, a free slot and a BAR for an attach in progress.
    private func reserveSlotAndBar(id: String) throws(DeviceManagerError) -> (Int, Range<UInt64>) {
        try state.withLock { state throws(DeviceManagerError) -> (Int, Range<UInt64>) in
            guard !state.frozen || state.publisher != nil else { throw .busesFrozen }
            guard !state.tree.contains(id), state.attachments[id] == nil else { throw .idInUse(id) }
            guard let slot = (1..<32).first(where: { state.functions[$0] == nil && !state.reservedSlots.contains($0) }) else {
                throw .noFreeSlot
            }
            guard let bar = state.bars.allocate(size: VirtioPciDevice.barSize) else { throw .noBarSpace(size: VirtioPciDevice.barSize) }
            state.reservedSlots.insert(slot)
            state.attachments[id] = Attachment(slot: slot, bar: bar)
            return (slot, bar)
        }
    }

    // MARK: - Detaching

    /// Takes device `id` out: its bus ranges and configuration window go (a new bus snapshot), its doorbells
    /// are unregistered from KVM and no longer watched, its vectors released, its slot and BAR freed and
    /// its nodes removed from the tree. The caller owns the device's loop.
    nonisolated(nonsending) public func detach(id: String) async throws(DeviceManagerError) {
        let (attachment, publisher) = try state.withLock { state throws(DeviceManagerError) -> (Attachment, (any BusPublisher)?) in
            guard id != Self.pciRootID, let attachment = state.attachments[id], !attachment.nodes.isEmpty else { throw .unknownDevice(id) }
            guard !state.frozen || state.publisher != nil else { throw .busesFrozen }
            var next = state
            next.pio = Self.removing(attachment.pioBases, from: next.pio)
            next.mmio = Self.removing(attachment.mmioBases, from: next.mmio)
            if let slot = attachment.slot {
                next.functions[slot] = nil
                let window = layout.mmconfigBase + UInt64(slot) << 15
                next.tree.update(Self.pciRootID) { $0.resources.removeAll { $0 == .mmioRange(base: window, size: 0x1000) } }
            }
            if let bar = attachment.bar { next.bars.free(bar) }
            next.tree.remove(id)
            next.attachments[id] = nil
            Self.commit(&next, functionsChanged: attachment.slot != nil)
            state = next
            return (attachment, next.publisher)
        }
        // No vCPU may still be dispatching to the device when its doorbells go and it stops.
        publisher?.waitForQuiescence()
        await undo(attachment)
    }

    /// Stops every virtio device (before the VM is torn down).
    nonisolated(nonsending) public func stopAll() async {
        for (_, device) in virtioDevices { await device.stop() }
    }

    /// Shuts down the loops made for single devices (after ``stopAll()``, before the VM goes).
    public func shutDownDeviceLoops() {
        let loops = state.withLock { state in state.attachments.values.flatMap(\.loops) }
        for loop in loops { loop.shutdown() }
    }

    // MARK: - Run-time changes

    /// From now on the vCPUs run on the last ``buses`` snapshot: without a ``BusPublisher`` the buses can
    /// no longer change (attach and detach throw ``DeviceManagerError/busesFrozen``).
    public func freeze() { state.withLock { $0.frozen = true } }

    /// Every later change hands its new bus snapshot to `publisher` (which swaps what the vCPUs read).
    public func publish(to publisher: any BusPublisher) { state.withLock { $0.publisher = publisher } }

    // MARK: - Internals

    /// Makes `state`'s bus snapshot (the configuration ports remade if the functions changed) and hands it
    /// to the publisher, if any.
    ///
    /// A remade ``PciConfigPorts`` shares the machine's CONFIG_ADDRESS latch, so an address the guest
    /// latched before a slot changed still selects the same function after the swap.
    private static func commit(_ state: inout State, functionsChanged: Bool) {
        if functionsChanged { state.configPorts = PciConfigPorts(functions: state.functions, latch: state.configAddress) }
        let pio = (try? state.pio.inserting(name: pciRootID, base: PciConfigPorts.port, size: PciConfigPorts.size,
                                            .router(state.configPorts), counters: state.configPortsCounters)) ?? state.pio
        state.snapshot = IoBuses(pio: pio, mmio: state.mmio)
        state.publisher?.publish(state.snapshot)
    }

    /// `device`'s configuration window in `slot` (MMCONFIG and mechanism #1), a resource of the PCI root.
    private static func addFunction(_ state: inout State, _ attachment: inout Attachment, slot: Int, _ device: any PciDevice,
                                    layout: PciLayout) throws(DeviceManagerError) {
        let window = BusTarget.device(PciConfigWindow(device: device))
        let base = layout.mmconfigBase + UInt64(slot) << 15
        do throws(BusError) {
            state.mmio = try state.mmio.inserting(name: pciRootID, base: base, size: 0x1000, window)
        } catch {
            throw .bus(error)
        }
        state.functions[slot] = window
        attachment.mmioBases.append(base)
        state.tree.update(pciRootID) { $0.resources.append(.mmioRange(base: base, size: 0x1000)) }
    }

    /// A doorbell as a `KVM_IOEVENTFD` matching any write width; hosts without that capability get one
    /// ioeventfd per width a driver uses (2 and 4 bytes). Each registration is recorded for the undo.
    private func registerDoorbell(_ attachment: inout Attachment, fd: Int32, address: UInt64) throws(DeviceManagerError) {
        let lengths: [UInt32] = vm.kvm.checkExtension(KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0 ? [0] : [2, 4]
        for length in lengths {
            do {
                try vm.registerIoeventfd(eventFD: fd, address: address, length: length)
            } catch {
                throw .host("cannot register the doorbell at \(hex(address)): \(error)")
            }
            attachment.ioeventfds.append((fd, address, length))
        }
    }

    /// Undoes what `attachment` set up with KVM and the device's loop (the buses are the caller's).
    nonisolated(nonsending) private func undo(_ attachment: Attachment) async {
        for doorbell in attachment.ioeventfds.reversed() {
            vm.unregisterIoeventfd(eventFD: doorbell.fd, address: doorbell.address, length: doorbell.length)
        }
        await attachment.virtio?.stop()
        msiRouter.release(attachment.vectors)
        for loop in attachment.loops { loop.shutdown() }
    }

    private static func removing(_ bases: [UInt64], from bus: Bus) -> Bus {
        guard !bases.isEmpty else { return bus }
        var rebuilt = Bus()
        for entry in bus.entries where !bases.contains(entry.base) {
            // Re-inserting entries of a valid bus cannot overlap.
            rebuilt = (try? rebuilt.inserting(name: entry.name, base: entry.base, size: entry.size, entry.target,
                                              counters: entry.counters)) ?? rebuilt
        }
        return rebuilt
    }
}

/// Swaps the bus snapshot the vCPU threads dispatch on (see ``DeviceManager/publish(to:)``).
public protocol BusPublisher: Sendable {
    /// Makes `buses` what the vCPUs dispatch their next exits on. Must not block (called under a lock).
    func publish(_ buses: IoBuses)
    /// Returns once no vCPU can still be dispatching on an earlier snapshot. Blocks the calling thread
    /// briefly; never called on a device loop.
    func waitForQuiescence()
}

extension VcpuManager: BusPublisher {
    public nonisolated func publish(_ buses: IoBuses) { publishBuses(buses) }
    public nonisolated func waitForQuiescence() { waitForBusQuiescence() }
}
