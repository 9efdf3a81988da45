import CKvm
import EpollLoop
import Glibc

/// ``EmulatedCpu`` on a real vCPU, through KVM ioctls. Used only on the vCPU's own thread while the vCPU
/// is out of `KVM_RUN`.
struct KvmEmulatedCpu: EmulatedCpu {
    let vcpu: Vcpu
    let memory: GuestMemory
    /// Size of the XSAVE buffer KVM exchanges (`KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` on the VM, ≥ 4096).
    let xsaveSize: Int

    /// Offsets in the XSAVE area's legacy (FXSAVE) region and header.
    private enum Xsave {
        static let fcw = 0, fsw = 2, mxcsr = 24, mxcsrMask = 28
        static let xstateBv = 512
        static let sseComponent: UInt64 = 1 << 1
    }

    func registers() throws(KvmError) -> GuestRegisters {
        var regs = kvm_regs()
        _ = try kvmIoctl("KVM_GET_REGS") { ckvm_ioctl_ptr(vcpu.fd, CKVM_GET_REGS, &regs) }
        var result = GuestRegisters()
        result.gprs = [regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
                       regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15]
        result.rip = regs.rip
        result.rflags = regs.rflags
        return result
    }

    func setRegisters(_ r: GuestRegisters) throws(KvmError) {
        let g = r.gprs
        var regs = kvm_regs(rax: g[0], rbx: g[3], rcx: g[1], rdx: g[2], rsi: g[6], rdi: g[7], rsp: g[4], rbp: g[5],
                            r8: g[8], r9: g[9], r10: g[10], r11: g[11], r12: g[12], r13: g[13], r14: g[14], r15: g[15],
                            rip: r.rip, rflags: r.rflags)
        _ = try kvmIoctl("KVM_SET_REGS") { ckvm_ioctl_ptr(vcpu.fd, CKVM_SET_REGS, &regs) }
    }

    func controlState() throws(KvmError) -> GuestControlState {
        var sregs = kvm_sregs()
        _ = try kvmIoctl("KVM_GET_SREGS") { ckvm_ioctl_ptr(vcpu.fd, CKVM_GET_SREGS, &sregs) }
        let ldtUsable = sregs.ldt.unusable == 0 && sregs.ldt.selector & 0xFFFC != 0
        return GuestControlState(cr0: sregs.cr0, cr4: sregs.cr4, efer: sregs.efer, longMode: sregs.cs.l != 0,
                                 cpl: sregs.cs.dpl, fsBase: sregs.fs.base, gsBase: sregs.gs.base,
                                 gdt: DescriptorTable(base: sregs.gdt.base, limit: UInt32(sregs.gdt.limit)),
                                 ldt: ldtUsable ? DescriptorTable(base: sregs.ldt.base, limit: sregs.ldt.limit) : nil)
    }

    /// Read from the XSAVE area (`KVM_GET_XSAVE`/`KVM_GET_XSAVE2`), not `KVM_GET_FPU`: on the kvm_pvm host
    /// `KVM_GET_FPU` reports MXCSR as 0 and `KVM_SET_FPU` does not change it, while the XSAVE area holds
    /// the real value (measured; docs/compat.md).
    func fpuControl() throws(KvmError) -> FpuControlState {
        try withXsave { area, _ in
            FpuControlState(fcw: area.load(fromByteOffset: Xsave.fcw, as: UInt16.self),
                            fsw: area.load(fromByteOffset: Xsave.fsw, as: UInt16.self),
                            mxcsr: area.load(fromByteOffset: Xsave.mxcsr, as: UInt32.self),
                            mxcsrMask: area.load(fromByteOffset: Xsave.mxcsrMask, as: UInt32.self))
        }
    }

    /// Writes MXCSR into the XSAVE area and loads it back (`KVM_SET_XSAVE`). The SSE bit of XSTATE_BV is
    /// set so the kernel takes MXCSR from the buffer; the XMM registers in the buffer are the ones just read.
    func setMxcsr(_ value: UInt32) throws(KvmError) {
        try withXsave { area, fd throws(KvmError) in
            area.storeBytes(of: value, toByteOffset: Xsave.mxcsr, as: UInt32.self)
            let bv = area.load(fromByteOffset: Xsave.xstateBv, as: UInt64.self)
            area.storeBytes(of: bv | Xsave.sseComponent, toByteOffset: Xsave.xstateBv, as: UInt64.self)
            _ = try kvmIoctl("KVM_SET_XSAVE") { ckvm_ioctl_ptr(fd, CKVM_SET_XSAVE, area) }
        }
    }

    /// Gives `body` the vCPU's XSAVE area, 64-byte aligned, valid for the call only.
    private func withXsave<R>(_ body: (UnsafeMutableRawPointer, Int32) throws(KvmError) -> R) throws(KvmError) -> R {
        let area = UnsafeMutableRawPointer.allocate(byteCount: xsaveSize, alignment: 64)
        defer { area.deallocate() }
        area.initializeMemory(as: UInt8.self, repeating: 0, count: xsaveSize)
        if xsaveSize > 4096 {
            _ = try kvmIoctl("KVM_GET_XSAVE2") { ckvm_ioctl_ptr(vcpu.fd, CKVM_GET_XSAVE2, area) }
        } else {
            _ = try kvmIoctl("KVM_GET_XSAVE") { ckvm_ioctl_ptr(vcpu.fd, CKVM_GET_XSAVE, area) }
        }
        return try body(area, vcpu.fd)
    }

    /// `KVM_TRANSLATE` walks the guest's page tables for a linear address. It reports no permissions
    /// (KVM sets `writeable` to 1 for every mapping) and sets no accessed/dirty bits; docs/compat.md.
    func translate(_ linear: UInt64) throws(KvmError) -> UInt64? {
        var translation = kvm_translation()
        translation.linear_address = linear
        _ = try kvmIoctl("KVM_TRANSLATE") { ckvm_ioctl_ptr(vcpu.fd, CKVM_TRANSLATE, &translation) }
        return translation.valid != 0 ? translation.physical_address : nil
    }

    /// Queues `exception` as injected (`exception.injected = 1`), keeping the rest of the vCPU's event
    /// state as `KVM_GET_VCPU_EVENTS` returned it. Without `KVM_CAP_EXCEPTION_PAYLOAD` (ActorVMM does not
    /// enable it) KVM delivers no payload, so a #PF's CR2 is written first with `KVM_SET_SREGS`.
    ///
    /// Soft exceptions: the caller moves RIP past `int3` before injecting #BP. kvm_pvm delivers the
    /// exception with the RIP it finds, so the guest's handler sees the address after `int3` (checked on
    /// the host by the end-to-end test). A VMX host would add the last exit's instruction length to an
    /// injected soft exception; compatibility mode is not meant for such hosts (their emulator runs `int3`).
    func inject(_ exception: GuestException) throws(KvmError) {
        var events = kvm_vcpu_events()
        _ = try kvmIoctl("KVM_GET_VCPU_EVENTS") { ckvm_ioctl_ptr(vcpu.fd, CKVM_GET_VCPU_EVENTS, &events) }
        guard events.exception.injected == 0, events.exception.pending == 0 else {
            throw .ioctl(name: "KVM_SET_VCPU_EVENTS (exception \(events.exception.nr) already queued)", errno: Errno(rawValue: EBUSY))
        }
        if let address = exception.pageFaultAddress {
            var sregs = kvm_sregs()
            _ = try kvmIoctl("KVM_GET_SREGS") { ckvm_ioctl_ptr(vcpu.fd, CKVM_GET_SREGS, &sregs) }
            sregs.cr2 = address
            _ = try kvmIoctl("KVM_SET_SREGS") { ckvm_ioctl_ptr(vcpu.fd, CKVM_SET_SREGS, &sregs) }
        }
        events.exception.injected = 1
        events.exception.pending = 0
        events.exception.nr = exception.vector
        events.exception.has_error_code = exception.errorCode == nil ? 0 : 1
        events.exception.error_code = exception.errorCode ?? 0
        _ = try kvmIoctl("KVM_SET_VCPU_EVENTS") { ckvm_ioctl_ptr(vcpu.fd, CKVM_SET_VCPU_EVENTS, &events) }
    }
}
