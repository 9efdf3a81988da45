import CKvm
import EpollLoop
import Glibc

/// One vCPU's architectural state as KVM exposes it, for snapshot and migration: the payload of a
/// `vcpu` section is the vCPU id (u32) then ``KvmStateParts`` with these tags.
public struct VcpuState: Sendable, Equatable {
    public enum Part: UInt32, CaseIterable, Sendable {
        case regs = 1, sregs, fpu, xsave, xcrs, msrs, lapic, events, mpState, debugRegs, tscKhz

        var name: String { "\(self)" }
        static let names: [UInt32: String] = Dictionary(uniqueKeysWithValues: allCases.map { ($0.rawValue, $0.name) })
    }

    public var id: UInt32
    public var parts: KvmStateParts

    public init(id: UInt32, parts: KvmStateParts = KvmStateParts()) {
        self.id = id
        self.parts = parts
    }

    public subscript(part: Part) -> [UInt8]? {
        get { parts[part.rawValue] }
        set { parts[part.rawValue] = newValue }
    }

    public func encode() -> [UInt8] {
        var out = SnapshotEncoder()
        out.u32(id)
        parts.encode(into: &out)
        return out.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(SnapshotError) -> VcpuState {
        var input = SnapshotDecoder(bytes, context: "vcpu section")
        let id = try input.u32()
        input.context = "vcpu\(id)"
        let parts = try KvmStateParts.decode(&input, known: Part.names)
        try input.finish()
        for required in [Part.regs, .sregs, .lapic, .mpState, .events] where parts[required.rawValue] == nil {
            throw .missing("\(required.name) in vcpu\(id)")
        }
        return VcpuState(id: id, parts: parts)
    }

    /// The saved MSRs as (index, value) pairs (the `msrs` part: count u32, then index u32 + value u64 each).
    public var msrs: [(index: UInt32, value: UInt64)] {
        get throws(SnapshotError) {
            guard let bytes = self[.msrs] else { return [] }
            var input = SnapshotDecoder(bytes, context: "vcpu\(id) msrs")
            let count = try input.u32()
            guard count <= 4096 else { throw .invalid("vcpu\(id) msrs: \(count) entries") }
            var list: [(UInt32, UInt64)] = []
            for _ in 0..<count { list.append((try input.u32(), try input.u64())) }
            try input.finish()
            return list
        }
    }

    static func encodeMsrs(_ list: [(index: UInt32, value: UInt64)]) -> [UInt8] {
        var out = SnapshotEncoder()
        out.u32(UInt32(list.count))
        for (index, value) in list {
            out.u32(index)
            out.u64(value)
        }
        return out.bytes
    }
}

extension Vcpu {
    /// Captures this vCPU's state. Call only while its thread is parked (paused) or before it started:
    /// the ioctls take the vCPU's mutex, and a running vCPU would change under them. Order as Firecracker's
    /// `save_state`: MP state first (it may accept pending INIT/SIPI events into the LAPIC), vcpu events last.
    /// `xsaveSize`: `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` on the VM (0: use `KVM_GET_XSAVE`'s 4096 bytes).
    /// `msrIndices`: from ``Kvm/msrIndexList()``; MSRs this vCPU cannot read are left out (see ``readMsrs(_:)``).
    public func captureState(xsaveSize: Int, msrIndices: [UInt32]) throws(KvmError) -> VcpuState {
        var state = VcpuState(id: UInt32(id))
        state[.mpState] = try KvmStructIO.get(fd, "KVM_GET_MP_STATE", CKVM_GET_MP_STATE, size: MemoryLayout<kvm_mp_state>.size)
        state[.regs] = try KvmStructIO.get(fd, "KVM_GET_REGS", CKVM_GET_REGS, size: MemoryLayout<kvm_regs>.size)
        state[.sregs] = try KvmStructIO.get(fd, "KVM_GET_SREGS", CKVM_GET_SREGS, size: MemoryLayout<kvm_sregs>.size)
        if let xsave = try? KvmStructIO.get(fd, xsaveSize > 4096 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE",
                                            xsaveSize > 4096 ? CKVM_GET_XSAVE2 : CKVM_GET_XSAVE, size: max(xsaveSize, 4096)) {
            state[.xsave] = xsave
            state[.xcrs] = try? KvmStructIO.get(fd, "KVM_GET_XCRS", CKVM_GET_XCRS, size: MemoryLayout<kvm_xcrs>.size)
        } else {
            state[.fpu] = try KvmStructIO.get(fd, "KVM_GET_FPU", CKVM_GET_FPU, size: MemoryLayout<kvm_fpu>.size)
        }
        state[.debugRegs] = try? KvmStructIO.get(fd, "KVM_GET_DEBUGREGS", CKVM_GET_DEBUGREGS, size: MemoryLayout<kvm_debugregs>.size)
        state[.lapic] = try KvmStructIO.get(fd, "KVM_GET_LAPIC", CKVM_GET_LAPIC, size: MemoryLayout<kvm_lapic_state>.size)
        let khz = ckvm_ioctl(fd, CKVM_GET_TSC_KHZ)
        if khz > 0 { state[.tscKhz] = [UInt8](bytesOf: UInt32(khz).littleEndian) }
        state[.msrs] = VcpuState.encodeMsrs(try readMsrs(msrIndices))
        state[.events] = try KvmStructIO.get(fd, "KVM_GET_VCPU_EVENTS", CKVM_GET_VCPU_EVENTS, size: MemoryLayout<kvm_vcpu_events>.size)
        return state
    }

    /// Loads `state` into this (new, configured, not yet running) vCPU. Order as Firecracker's
    /// `restore_state`: TSC frequency, MP state, registers, special registers, XSAVE/FPU, XCRs, debug
    /// registers, LAPIC, MSRs, events. MSRs the host refuses are skipped and counted in the log.
    public func restoreState(_ state: VcpuState) throws(SnapshotError) {
        let owner = "vcpu\(id)"
        guard state.id == UInt32(id) else { throw .mismatch("vcpu\(id) given the state of vcpu\(state.id)") }
        if let khz = state[.tscKhz], khz.count == 4 {
            let wanted = UInt32(khz[0]) | UInt32(khz[1]) << 8 | UInt32(khz[2]) << 16 | UInt32(khz[3]) << 24
            let current = ckvm_ioctl(fd, CKVM_GET_TSC_KHZ)
            if current > 0 && UInt32(current) != wanted && ckvm_ioctl_arg(fd, CKVM_SET_TSC_KHZ, UInt(wanted)) < 0 {
                Log.warning("\(owner): cannot set the TSC to \(wanted) kHz (host runs at \(current) kHz): \(Errno.current)")
            }
        }
        try KvmStructIO.set(fd, "KVM_SET_MP_STATE", CKVM_SET_MP_STATE, state[.mpState] ?? [], size: MemoryLayout<kvm_mp_state>.size, owner: owner)
        try KvmStructIO.set(fd, "KVM_SET_REGS", CKVM_SET_REGS, state[.regs] ?? [], size: MemoryLayout<kvm_regs>.size, owner: owner)
        try KvmStructIO.set(fd, "KVM_SET_SREGS", CKVM_SET_SREGS, state[.sregs] ?? [], size: MemoryLayout<kvm_sregs>.size, owner: owner)
        if let xsave = state[.xsave] {
            guard xsave.count >= 4096 else { throw .invalid("\(owner) xsave: \(xsave.count) bytes (at least 4096)") }
            try KvmStructIO.set(fd, "KVM_SET_XSAVE", CKVM_SET_XSAVE, xsave, size: xsave.count, owner: owner)
        } else if let fpu = state[.fpu] {
            try KvmStructIO.set(fd, "KVM_SET_FPU", CKVM_SET_FPU, fpu, size: MemoryLayout<kvm_fpu>.size, owner: owner)
        }
        if let xcrs = state[.xcrs] {
            try KvmStructIO.set(fd, "KVM_SET_XCRS", CKVM_SET_XCRS, xcrs, size: MemoryLayout<kvm_xcrs>.size, owner: owner)
        }
        if let debug = state[.debugRegs] {
            try KvmStructIO.set(fd, "KVM_SET_DEBUGREGS", CKVM_SET_DEBUGREGS, debug, size: MemoryLayout<kvm_debugregs>.size, owner: owner)
        }
        try KvmStructIO.set(fd, "KVM_SET_LAPIC", CKVM_SET_LAPIC, state[.lapic] ?? [], size: MemoryLayout<kvm_lapic_state>.size, owner: owner)
        let skipped = writeMsrs(try state.msrs)
        if !skipped.isEmpty {
            Log.debug("\(owner): the host refused \(skipped.count) saved MSR(s): \(skipped.map { hex(UInt64($0)) }.joined(separator: ", "))")
        }
        try KvmStructIO.set(fd, "KVM_SET_VCPU_EVENTS", CKVM_SET_VCPU_EVENTS, state[.events] ?? [], size: MemoryLayout<kvm_vcpu_events>.size, owner: owner)
    }
}
