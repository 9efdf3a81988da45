import CKvm
import EpollLoop
import Glibc
import Synchronization

/// One KVM vCPU: its descriptor and its shared `kvm_run` page.
///
/// Owned by one vCPU thread while it runs. Other threads touch only `immediate_exit` (atomically, to kick
/// the thread out of `KVM_RUN`) and `requested`.
public final class Vcpu: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `run` is written by KVM and by the one vCPU thread that calls KVM_RUN;
    // other threads only store `immediate_exit` through an atomic C helper. The fd and mapping are
    // immutable and released in deinit, after the thread has been joined.
    public let id: Int
    public let fd: Int32
    let run: UnsafeMutablePointer<kvm_run>
    let runSize: Int

    /// What the vCPU thread should do at its next check: run, pause or stop.
    let requested = Atomic<UInt8>(VcpuRunState.running.rawValue)

    init(id: Int, fd: Int32, run: UnsafeMutableRawPointer, runSize: Int) {
        self.id = id
        self.fd = fd
        self.run = run.bindMemory(to: kvm_run.self, capacity: 1)
        self.runSize = runSize
    }

    deinit {
        munmap(run, runSize)
        close(fd)
    }

    /// Sets the CPUID leaves this vCPU reports: KVM's supported set with this vCPU's APIC id patched in.
    /// The corresponding ioctl is `KVM_SET_CPUID2`.
    public func setCPUID(_ supported: [kvm_cpuid_entry2]) throws(KvmError) {
        var entries = supported
        for index in entries.indices {
            switch entries[index].function {
            case 1:  // initial APIC id in EBX[31:24]
                entries[index].ebx = (entries[index].ebx & 0x00FF_FFFF) | (UInt32(id) << 24)
            case 0xB, 0x1F:  // x2APIC id
                entries[index].edx = UInt32(id)
            default:
                break
            }
        }
        let header = MemoryLayout<kvm_cpuid2>.size
        let stride = MemoryLayout<kvm_cpuid_entry2>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + entries.count * stride, alignment: 8)
        defer { buffer.deallocate() }
        let cpuid = buffer.bindMemory(to: kvm_cpuid2.self, capacity: 1)
        cpuid.pointee = kvm_cpuid2()
        cpuid.pointee.nent = UInt32(entries.count)
        entries.withUnsafeBytes { (buffer + header).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        _ = try kvmIoctl("KVM_SET_CPUID2") { ckvm_ioctl_ptr(fd, CKVM_SET_CPUID2, buffer) }
    }

    /// Loads the boot register state. The corresponding ioctls are `KVM_SET_SREGS` and `KVM_SET_REGS`.
    public func setBootState(_ state: VcpuBootState) throws(KvmError) {
        var sregs = kvm_sregs()
        _ = try kvmIoctl("KVM_GET_SREGS") { ckvm_ioctl_ptr(fd, CKVM_GET_SREGS, &sregs) }
        let code = Self.segment(state.code), data = Self.segment(state.data)
        sregs.cs = code
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.tr = Self.segment(state.tss)
        sregs.gdt.base = state.gdtBase; sregs.gdt.limit = state.gdtLimit
        sregs.idt.base = state.idtBase; sregs.idt.limit = state.idtLimit
        sregs.cr0 = state.cr0; sregs.cr3 = state.cr3; sregs.cr4 = state.cr4; sregs.efer = state.efer
        _ = try kvmIoctl("KVM_SET_SREGS") { ckvm_ioctl_ptr(fd, CKVM_SET_SREGS, &sregs) }

        var regs = kvm_regs()
        regs.rip = state.rip; regs.rsp = state.rsp; regs.rbp = state.rbp
        regs.rsi = state.rsi; regs.rbx = state.rbx; regs.rflags = state.rflags
        _ = try kvmIoctl("KVM_SET_REGS") { ckvm_ioctl_ptr(fd, CKVM_SET_REGS, &regs) }
    }

    static func segment(_ s: SegmentState) -> kvm_segment {
        var k = kvm_segment()
        k.base = s.base; k.limit = s.limit; k.selector = s.selector; k.type = s.type
        k.present = s.present ? 1 : 0; k.dpl = s.dpl; k.db = s.defaultSize32 ? 1 : 0
        k.s = s.codeOrData ? 1 : 0; k.l = s.long ? 1 : 0; k.g = s.granularity4K ? 1 : 0
        return k
    }

    /// The guest's current RIP (for error messages); 0 if it cannot be read.
    public func currentRIP() -> UInt64 { readRIP() ?? 0 }

    /// RIP through `KVM_GET_REGS`, or nil if the ioctl fails.
    private func readRIP() -> UInt64? {
        var regs = kvm_regs()
        return ckvm_ioctl_ptr(fd, CKVM_GET_REGS, &regs) == 0 ? regs.rip : nil
    }

    /// Where the vCPU is, for the log line when a VM stops: RIP, and the in-kernel LAPIC's run state
    /// (`KVM_GET_MP_STATE`: an application processor that never got its INIT/SIPI shows
    /// `uninitialized`, one waiting in `hlt` shows `halted`). Call only while this vCPU is not in `KVM_RUN`.
    public func stateSummary() -> String {
        var mp = kvm_mp_state()
        let rip = readRIP().map { hex($0) } ?? "unknown"
        let state: String
        if ckvm_ioctl_ptr(fd, CKVM_GET_MP_STATE, &mp) == 0 {
            state = switch Int32(mp.mp_state) {
            case KVM_MP_STATE_RUNNABLE: "runnable"
            case KVM_MP_STATE_UNINITIALIZED: "uninitialized"  // waiting for INIT/SIPI
            case KVM_MP_STATE_INIT_RECEIVED: "init-received"  // waiting for SIPI
            case KVM_MP_STATE_HALTED: "halted"
            case KVM_MP_STATE_SIPI_RECEIVED: "sipi-received"
            default: "mp_state \(mp.mp_state)"
            }
        } else {
            state = "mp_state unknown"
        }
        return "RIP \(rip), \(state)"
    }

    /// Makes the next (or current) `KVM_RUN` return with EINTR as soon as possible.
    func setImmediateExit(_ on: Bool) { ckvm_set_immediate_exit(run, on ? 1 : 0) }
}

/// What a vCPU thread is asked to do.
public enum VcpuRunState: UInt8, Sendable {
    case running, paused, stopped
}
