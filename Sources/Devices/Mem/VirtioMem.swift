import ActorVmm
import Synchronization

/// virtio-mem (virtio 1.2 §5.15, device id 24): a region of guest-physical memory, reserved once, whose
/// blocks the driver plugs and unplugs on request. The host asks for a size (`requested_size`, through
/// ``VirtioPciDevice/resizeMemory(requested:)``); the driver plugs or unplugs blocks to match it. The layout
/// and behaviour follow Cloud Hypervisor's `virtio-devices/src/mem.rs` (docs/hotplug.md): 2 MiB blocks, the
/// whole region usable, VERSION_1 only (no NUMA node, so no ACPI_PXM; unplugged memory stays readable, so no
/// UNPLUGGED_INACCESSIBLE), one request queue of 128 entries. Unplugging discards the blocks' host pages.
public final class VirtioMem: VirtioDeviceModel {
    /// Cloud Hypervisor's default block size: 2 MiB, so that KVM can back plugged blocks with huge pages.
    public static let defaultBlockSize: UInt64 = 2 << 20
    /// The region's start and size are multiples of Linux's memory block size on x86-64 (128 MiB).
    public static let regionAlignment: UInt64 = 128 << 20

    // Request types, response types and block states (§5.15.6).
    static let plug: UInt16 = 0, unplug: UInt16 = 1, unplugAll: UInt16 = 2, state: UInt16 = 3
    static let ack: UInt16 = 0, nack: UInt16 = 1, busy: UInt16 = 2, error: UInt16 = 3
    static let statePlugged: UInt16 = 0, stateUnplugged: UInt16 = 1, stateMixed: UInt16 = 2
    /// `struct virtio_mem_req` and `struct virtio_mem_resp`.
    static let requestSize = 24, responseSize = 10

    public let deviceType = VirtioDeviceType.memory
    public let queueCount = 1
    public let maxQueueSize: UInt16 = 128
    public let deviceFeatures: UInt64 = 0
    /// `struct virtio_mem_config`: block_size, node_id, padding[6], addr, region_size, usable_region_size,
    /// plugged_size, requested_size.
    public let configSize = 56

    public let blockSize: UInt64
    public let start: UInt64
    public let regionSize: UInt64
    public internal(set) var usableRegionSize: UInt64
    public internal(set) var pluggedSize: UInt64 = 0
    public internal(set) var requestedSize: UInt64
    public internal(set) var blocks: VirtioMemBlocks
    /// The sizes as the control plane reads them (vm.info, vm.counters) without a hop to the device.
    public let status: VirtioMemStatus

    /// A region of `size` bytes at `start` (both multiples of ``regionAlignment``), asking the driver for
    /// `requested` bytes from the start (Cloud Hypervisor's `hotplugged_size`).
    public init(start: UInt64, size: UInt64, requested: UInt64 = 0, blockSize: UInt64 = VirtioMem.defaultBlockSize) throws(VirtioError) {
        // At most the region alignment: 65535 blocks (a request's most) times the block size cannot overflow.
        guard blockSize.nonzeroBitCount == 1, blockSize >= 4096, blockSize <= Self.regionAlignment else {
            throw VirtioError("virtio-mem block size \(blockSize) is not a power of 2 from 4 KiB to 128 MiB")
        }
        guard size > 0, start % Self.regionAlignment == 0, size % Self.regionAlignment == 0, start.addingReportingOverflow(size).overflow == false else {
            throw VirtioError("virtio-mem region at \(hex(start)) of \(size) bytes is empty or not \(Self.regionAlignment >> 20) MiB aligned")
        }
        self.blockSize = blockSize
        self.start = start
        regionSize = size
        usableRegionSize = size
        requestedSize = 0
        blocks = VirtioMemBlocks(count: Int(size / blockSize))
        status = VirtioMemStatus()
        try resize(requested: requested)
    }

    /// Sets `requested_size` (the caller then raises the configuration interrupt): at most the region, a
    /// multiple of the block size.
    public func resize(requested: UInt64) throws(VirtioError) {
        guard requested <= regionSize else { throw VirtioError("requested size \(requested) is beyond the region's \(regionSize) bytes") }
        guard requested % blockSize == 0 else { throw VirtioError("requested size \(requested) is not a multiple of the block size (\(blockSize))") }
        requestedSize = requested
        publish()
    }

    func publish() {
        status.plugged.store(pluggedSize, ordering: .relaxed)
        status.requested.store(requestedSize, ordering: .relaxed)
    }

    public func readConfig(offset: Int, width: Int) -> UInt64 {
        ConfigImage.read(offset: offset, width: width) { image in
            image.append(blockSize)
            image.append(UInt16(0))  // node_id: meaningless without ACPI_PXM
            image.zeros(6)
            image.append(start)
            image.append(regionSize)
            image.append(usableRegionSize)
            image.append(pluggedSize)
            image.append(requestedSize)
        }
    }

    public func activate(device: isolated VirtioPciDevice) throws(VirtioError) {}

    /// A device reset changes no block (§5.15.5.2): plugged memory stays plugged and keeps its contents.
    public func reset(device: isolated VirtioPciDevice) {}

    public func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        device.drain(queue: 0) { chain in
            // A request needs its 24 readable bytes and room for the 10-byte response (Cloud Hypervisor
            // returns anything shorter unused, as here).
            guard chain.readableLength >= Self.requestSize, chain.writableLength >= Self.responseSize,
                  let request = try? chain.readBytes(count: Self.requestSize, memory: device.memory) else {
                device.countError()
                Log.guestWarning(&device.guestLog, source: device.name, "virtio-mem: a request without 24 readable and 10 writable bytes")
                device.complete(chain, queue: 0, written: 0)
                return true
            }
            let pluggedBefore = pluggedSize
            let (type, state) = handle(request, device: device)
            if pluggedSize != pluggedBefore { device.configChanged(notify: false) }
            var response = [UInt8](repeating: 0, count: Self.responseSize)
            response[0] = UInt8(truncatingIfNeeded: type)
            response[1] = UInt8(truncatingIfNeeded: type >> 8)
            response[8] = UInt8(truncatingIfNeeded: state)
            response[9] = UInt8(truncatingIfNeeded: state >> 8)
            let written = (try? chain.writeBytes(response, memory: device.memory)) ?? 0
            if type == Self.error { device.countError() }
            device.complete(chain, queue: 0, written: UInt32(written))
            return true
        }
    }

    /// Carries out one request (its 24 bytes); the response type and, for STATE, the state.
    func handle(_ request: [UInt8], device: isolated VirtioPciDevice) -> (type: UInt16, state: UInt16) {
        let type = UInt16(readLE(request, offset: 0, width: 2))
        let address = readLE(request, offset: 8, width: 8)
        let count = readLE(request, offset: 16, width: 2)
        switch type {
        case Self.plug: return (changeState(address: address, blocks: count, plug: true, memory: device.memory), 0)
        case Self.unplug: return (changeState(address: address, blocks: count, plug: false, memory: device.memory), 0)
        case Self.unplugAll: return (unplugAll(memory: device.memory), 0)
        case Self.state:
            guard let range = blockRange(address: address, blocks: count) else { return (Self.error, 0) }
            if blocks.all(range, plugged: true) { return (Self.ack, Self.statePlugged) }
            return (Self.ack, blocks.all(range, plugged: false) ? Self.stateUnplugged : Self.stateMixed)
        default:
            return (Self.error, 0)
        }
    }

    /// The blocks [address, address + blocks × block_size) cover, if that is a valid request range:
    /// block-aligned, at least one block, inside the usable region (§5.15.6: the device requirements of PLUG, UNPLUG and STATE).
    func blockRange(address: UInt64, blocks count: UInt64) -> Range<Int>? {
        let size = count * blockSize  // at most 65535 blocks: no overflow
        guard count > 0, address % blockSize == 0, address >= start else { return nil }
        let (end, overflow) = address.addingReportingOverflow(size)
        guard !overflow, end <= start + usableRegionSize else { return nil }
        let first = Int((address - start) / blockSize)
        return first..<(first + Int(count))
    }

    /// PLUG or UNPLUG: NACK when plugging would go beyond `requested_size` (as Cloud Hypervisor and QEMU
    /// check first), ERROR for a bad range or a block already in the target state; an unplug discards the
    /// blocks' memory first, and nothing changes if that fails.
    func changeState(address: UInt64, blocks count: UInt64, plug: Bool, memory: GuestMemory) -> UInt16 {
        if plug, pluggedSize + count * blockSize > requestedSize { return Self.nack }
        guard let range = blockRange(address: address, blocks: count), blocks.all(range, plugged: !plug) else { return Self.error }
        let size = count * blockSize
        if !plug {
            do {
                try memory.discard(at: GuestAddress(address), count: Int(size))
            } catch {
                Log.error("virtio-mem: cannot discard \(size) bytes at \(hex(address)): \(error)")
                return Self.error
            }
        }
        blocks.set(range, plugged: plug)
        pluggedSize = plug ? pluggedSize + size : pluggedSize - size
        publish()
        return Self.ack
    }

    /// UNPLUG_ALL: discards the whole region and unplugs every block (the usable region stays whole).
    func unplugAll(memory: GuestMemory) -> UInt16 {
        do {
            try memory.discard(at: GuestAddress(start), count: Int(regionSize))
        } catch {
            Log.error("virtio-mem: cannot discard the region at \(hex(start)): \(error)")
            return Self.error
        }
        blocks.clear()
        pluggedSize = 0
        publish()
        return Self.ack
    }
}

/// A virtio-mem device's plugged and requested sizes, readable from any thread (the device updates them).
public final class VirtioMemStatus: Sendable {
    public let plugged = Atomic<UInt64>(0)
    public let requested = Atomic<UInt64>(0)
    public init() {}
}

extension VirtioPciDevice {
    /// Bumps `config_generation` (the device configuration changed) and, if `notify` and the driver is
    /// running, sends the configuration-change interrupt.
    public func configChanged(notify: Bool) {
        configGeneration &+= 1
        if notify, isActive { raise(vector: configVector, isrBit: 2) }
    }

    /// vm.resize with virtio-mem: sets the device's `requested_size` and tells the driver (§5.15.4: a change
    /// of requested_size is notified). Throws, changing nothing, if this is no virtio-mem device or the size
    /// is not one it can ask for.
    public func resizeMemory(requested: UInt64) throws(VirtioError) {
        guard let memory = backend as? VirtioMem else { throw VirtioError("\(name) is not a virtio-mem device") }
        guard requested != memory.requestedSize else { return }
        try memory.resize(requested: requested)
        configChanged(notify: true)
    }
}
