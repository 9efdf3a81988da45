import CKvm
import EpollLoop
import Glibc

/// The VM-wide state KVM keeps in the kernel: the two PICs and the IOAPIC (`KVM_GET_IRQCHIP`), the
/// kvmclock (`KVM_GET_CLOCK`) and, if created, the PIT (`KVM_GET_PIT2`). The payload of the `vm` section
/// is ``KvmStateParts`` with these tags.
public struct VmKernelState: Sendable, Equatable {
    public enum Part: UInt32, CaseIterable, Sendable {
        case picMaster = 1, picSlave, ioapic, clock, pit2

        static let names: [UInt32: String] = Dictionary(uniqueKeysWithValues: allCases.map { ($0.rawValue, "\($0)") })
    }

    public var parts: KvmStateParts

    public init(parts: KvmStateParts = KvmStateParts()) { self.parts = parts }

    public subscript(part: Part) -> [UInt8]? {
        get { parts[part.rawValue] }
        set { parts[part.rawValue] = newValue }
    }

    public func encode() -> [UInt8] {
        var out = SnapshotEncoder()
        parts.encode(into: &out)
        return out.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(SnapshotError) -> VmKernelState {
        var input = SnapshotDecoder(bytes, context: "vm section")
        let parts = try KvmStateParts.decode(&input, known: Part.names)
        try input.finish()
        for required in [Part.picMaster, .picSlave, .ioapic, .clock] where parts[required.rawValue] == nil {
            throw .missing("\(required) in the vm section")
        }
        return VmKernelState(parts: parts)
    }
}

extension Vm {
    /// Captures the in-kernel irqchip, clock and PIT. Call with every vCPU paused.
    public func captureState() throws(KvmError) -> VmKernelState {
        var state = VmKernelState()
        for (part, chip) in [(VmKernelState.Part.picMaster, 0), (.picSlave, 1), (.ioapic, 2)] {
            var irqchip = kvm_irqchip()
            irqchip.chip_id = UInt32(chip)
            _ = try kvmIoctl("KVM_GET_IRQCHIP") { ckvm_ioctl_ptr(fd, CKVM_GET_IRQCHIP, &irqchip) }
            state[part] = [UInt8](bytesOf: irqchip)
        }
        state[.clock] = try KvmStructIO.get(fd, "KVM_GET_CLOCK", CKVM_GET_CLOCK, size: MemoryLayout<kvm_clock_data>.size)
        if hasPit {
            state[.pit2] = try KvmStructIO.get(fd, "KVM_GET_PIT2", CKVM_GET_PIT2, size: MemoryLayout<kvm_pit_state2>.size)
        }
        return state
    }

    /// Loads `state` into this new VM, before its vCPUs run. The clock's flags are cleared: KVM refuses
    /// `KVM_CLOCK_TSC_STABLE` (a report, not a request), and without `KVM_CLOCK_REALTIME` the guest's clock
    /// continues from the value it had when it was paused.
    public func restoreState(_ state: VmKernelState) throws(SnapshotError) {
        for (part, chip) in [(VmKernelState.Part.picMaster, UInt32(0)), (.picSlave, 1), (.ioapic, 2)] {
            let bytes = state[part] ?? []
            guard bytes.count == MemoryLayout<kvm_irqchip>.size else {
                throw .invalid("vm \(part): \(bytes.count) bytes, expected \(MemoryLayout<kvm_irqchip>.size)")
            }
            var irqchip = kvm_irqchip()
            withUnsafeMutableBytes(of: &irqchip) { $0.copyBytes(from: bytes) }
            guard irqchip.chip_id == chip else { throw .invalid("vm \(part): chip id \(irqchip.chip_id), expected \(chip)") }
            if ckvm_ioctl_ptr(fd, CKVM_SET_IRQCHIP, &irqchip) < 0 {
                throw .io("vm \(part): KVM_SET_IRQCHIP failed: \(Errno.current)")
            }
        }
        var clockBytes = state[.clock] ?? []
        guard clockBytes.count == MemoryLayout<kvm_clock_data>.size else {
            throw .invalid("vm clock: \(clockBytes.count) bytes, expected \(MemoryLayout<kvm_clock_data>.size)")
        }
        for i in 8..<12 { clockBytes[i] = 0 }  // flags (u32 after the u64 clock)
        try KvmStructIO.set(fd, "KVM_SET_CLOCK", CKVM_SET_CLOCK, clockBytes, size: clockBytes.count, owner: "vm")
        if let pit = state[.pit2] {
            guard hasPit else { throw .mismatch("the snapshot has a PIT and this VM has none") }
            try KvmStructIO.set(fd, "KVM_SET_PIT2", CKVM_SET_PIT2, pit, size: MemoryLayout<kvm_pit_state2>.size, owner: "vm")
        }
    }
}
