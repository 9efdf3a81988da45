import EpollLoop

/// Where a device sends its interrupt: an edge on a line (legacy IRQ) or an MSI-X vector.
/// Injected at construction or activation, so devices never see KVM; tests pass a counting fake.
public protocol InterruptSink: Sendable {
    /// Signals the interrupt once (an edge on a legacy line, one message for MSI).
    func trigger()
}

/// A legacy interrupt line driven through `KVM_IRQFD`: writing the eventfd makes KVM pulse GSI `gsi` in
/// the in-kernel PIC/IOAPIC without any userspace exit or vCPU involvement.
public final class IrqFdLine: InterruptSink {
    public let gsi: UInt32
    let eventFD: EventFD
    let vm: Vm

    public init(vm: Vm, gsi: UInt32) throws(KvmError) {
        do {
            eventFD = try EventFD()
        } catch {
            throw .ioctl(name: "eventfd", errno: error)
        }
        self.vm = vm
        self.gsi = gsi
        try vm.registerIrqfd(eventFD: eventFD.rawValue, gsi: gsi)
    }

    deinit { vm.unregisterIrqfd(eventFD: eventFD.rawValue, gsi: gsi) }

    public func trigger() { eventFD.signal() }
}

/// An interrupt sink that does nothing (devices configured without an interrupt).
public struct NoInterrupt: InterruptSink {
    public init() {}
    public func trigger() {}
}
