import CKvm
import EpollLoop
import Glibc
import Synchronization

/// One MSI vector of a device: a GSI with an irqfd. The device signals it from its event loop; KVM turns
/// the eventfd write into the MSI message currently routed to that GSI, with no exit and no vCPU involved.
public final class MsiVector: InterruptSink {
    public let gsi: UInt32
    let eventFD: EventFD

    init(gsi: UInt32, eventFD: consuming EventFD) {
        self.gsi = gsi
        self.eventFD = eventFD
    }

    public func trigger() { eventFD.signal() }
    var rawFD: Int32 { eventFD.rawValue }
}

/// What devices need to deliver MSI-X: vectors, and routes from vectors to MSI messages. Injected, so
/// devices never see KVM; tests pass a fake.
public protocol MsiController: Sendable {
    /// New vectors (each with its own irqfd), not yet routed anywhere.
    func allocate(count: Int) throws(KvmError) -> [any MsiTarget]
    /// Points `vector` at the MSI message (`address`, `data`), or removes its route (nil).
    func route(_ vector: any MsiTarget, message: (address: UInt64, data: UInt32)?)
}

/// An allocated MSI vector: signal it to send its routed message.
public protocol MsiTarget: InterruptSink {
    var gsi: UInt32 { get }
}

extension MsiVector: MsiTarget {}

/// The VM's GSI routing table (`KVM_SET_GSI_ROUTING`), shared by every MSI-X device.
///
/// KVM replaces the whole table on every update, so this object keeps it: the default legacy routes
/// (GSIs 0–15 to the PIC and IOAPIC, 16–23 to the IOAPIC) plus one MSI route per programmed vector. It is VM
/// infrastructure called from several device loops, so it holds its table in a `Mutex`.
public final class GsiRouter: MsiController {
    public typealias MsiRoutes = [UInt32: (address: UInt64, data: UInt32)]
    let vm: Vm
    static let firstMsiGsi: UInt32 = 24
    struct State {
        var nextGsi = GsiRouter.firstMsiGsi
        var msiRoutes: MsiRoutes = [:]
    }
    let state = Mutex(State())
    /// Kept alive here so their irqfds stay registered as long as the VM.
    let vectors = Mutex<[MsiVector]>([])
    /// Hands a complete table to KVM: ``apply(msiRoutes:)``, unless a test observes or delays it.
    let install: @Sendable (MsiRoutes) throws(KvmError) -> Void

    public convenience init(vm: Vm) {
        self.init(vm: vm) { routes throws(KvmError) in try GsiRouter.apply(msiRoutes: routes, vm: vm) }
    }

    init(vm: Vm, install: @escaping @Sendable (MsiRoutes) throws(KvmError) -> Void) {
        self.vm = vm
        self.install = install
    }

    public func allocate(count: Int) throws(KvmError) -> [any MsiTarget] {
        var created: [MsiVector] = []
        for _ in 0..<count {
            let gsi = state.withLock { s -> UInt32 in
                defer { s.nextGsi += 1 }
                return s.nextGsi
            }
            let eventFD: EventFD
            do { eventFD = try EventFD() } catch { throw .ioctl(name: "eventfd", errno: error) }
            try vm.registerIrqfd(eventFD: eventFD.rawValue, gsi: gsi)
            created.append(MsiVector(gsi: gsi, eventFD: eventFD))
        }
        vectors.withLock { $0 += created }
        return created
    }

    /// Updates one route and installs the whole table, holding the lock across the ioctl: KVM keeps the
    /// last table it was given, so two devices (on two loops) routing at once must install in the order
    /// their updates were made, or the later device's route is lost (Cloud Hypervisor does the same).
    public func route(_ vector: any MsiTarget, message: (address: UInt64, data: UInt32)?) {
        do {
            try state.withLock { s throws(KvmError) in
                s.msiRoutes[vector.gsi] = message
                try install(s.msiRoutes)
            }
        } catch {
            Log.warning("MSI route for GSI \(vector.gsi) not applied: \(error)")
        }
    }

    /// Builds and installs the whole routing table. The corresponding ioctl is `KVM_SET_GSI_ROUTING`.
    static func apply(msiRoutes: MsiRoutes, vm: Vm) throws(KvmError) {
        var entries: [kvm_irq_routing_entry] = []
        for gsi in UInt32(0)..<24 {
            if gsi < 16 {
                entries.append(Self.irqchip(gsi: gsi, chip: gsi < 8 ? UInt32(KVM_IRQCHIP_PIC_MASTER) : UInt32(KVM_IRQCHIP_PIC_SLAVE), pin: gsi % 8))
            }
            entries.append(Self.irqchip(gsi: gsi, chip: UInt32(KVM_IRQCHIP_IOAPIC), pin: gsi))
        }
        for (gsi, message) in msiRoutes.sorted(by: { $0.key < $1.key }) {
            var entry = kvm_irq_routing_entry()
            entry.gsi = gsi
            entry.type = UInt32(KVM_IRQ_ROUTING_MSI)
            entry.u.msi.address_lo = UInt32(truncatingIfNeeded: message.address)
            entry.u.msi.address_hi = UInt32(truncatingIfNeeded: message.address >> 32)
            entry.u.msi.data = message.data
            entries.append(entry)
        }
        let header = MemoryLayout<kvm_irq_routing>.size
        let stride = MemoryLayout<kvm_irq_routing_entry>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + entries.count * stride, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: header)
        buffer.storeBytes(of: UInt32(entries.count), as: UInt32.self)
        entries.withUnsafeBytes { (buffer + header).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        _ = try kvmIoctl("KVM_SET_GSI_ROUTING") { ckvm_ioctl_ptr(vm.fd, CKVM_SET_GSI_ROUTING, buffer) }
    }

    static func irqchip(gsi: UInt32, chip: UInt32, pin: UInt32) -> kvm_irq_routing_entry {
        var entry = kvm_irq_routing_entry()
        entry.gsi = gsi
        entry.type = UInt32(KVM_IRQ_ROUTING_IRQCHIP)
        entry.u.irqchip.irqchip = chip
        entry.u.irqchip.pin = pin
        return entry
    }
}
