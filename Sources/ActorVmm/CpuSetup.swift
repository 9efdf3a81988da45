import CKvm
import EpollLoop

/// The architectural state every vCPU starts with besides its registers: CPUID with this VM's topology,
/// a few MSRs, the FPU, and the local APIC's LINT pins — what Firecracker and Cloud Hypervisor set up.
extension Vcpu {
    /// Configures vCPU `id` of a VM with `maxVcpus` possible vCPUs (one core each, one thread per core).
    public func configure(supportedCPUID: [kvm_cpuid_entry2], maxVcpus: Int) throws(KvmError) {
        try setCPUID(Self.cpuid(supportedCPUID, id: id, maxVcpus: maxVcpus))
        try setBootMSRs()
        try setBootFPU()
        try setLintPins()
    }

    /// KVM's supported CPUID with the topology leaves filled in for this vCPU: initial APIC id and logical
    /// processor count (leaf 1), the extended topology (leaf 0xB, and 0x1F where the maximum basic leaf
    /// reaches it: an SMT level of 1 thread, a core level of `maxVcpus` cores, then the invalid level that
    /// ends the list), AMD's core count (0x8000_0008) and AMD's extended APIC id, core id and node
    /// (0x8000_001E). KVM's own hypervisor leaves (0x4000_0000 "KVMKVMKVM", 0x4000_0001 features) come
    /// through unchanged.
    ///
    /// Leaf 1 always gets the hypervisor bit (ECX bit 31), as Cloud Hypervisor sets it: hardware KVM's
    /// `KVM_GET_SUPPORTED_CPUID` does not report it (kvm_pvm does), and without it Linux never looks at
    /// the 0x4000_0000 leaves, finds no kvm-clock, fails to calibrate the TSC and hangs in
    /// `calibrate_delay`.
    ///
    /// The topology leaves are written whole, not patched: KVM may report leaf 0xB with subleaf 0 only
    /// (seen on an AMD host), and Linux then reads a zero subleaf 1, finds no core level and puts every
    /// vCPU in a package of its own.
    public static func cpuid(_ supported: [kvm_cpuid_entry2], id: Int, maxVcpus: Int) -> [kvm_cpuid_entry2] {
        let apicID = UInt32(id)
        var coreShift: UInt32 = 0
        while (1 << coreShift) < maxVcpus { coreShift += 1 }
        let maxBasic = supported.first { $0.function == 0 }?.eax ?? 0
        var entries: [kvm_cpuid_entry2] = []
        for var e in supported {
            switch e.function {
            case 1:
                e.ebx = (e.ebx & 0x0000_FFFF) | (UInt32(min(maxVcpus, 255)) << 16) | (apicID << 24)
                if maxVcpus > 1 { e.edx |= 1 << 28 }  // HTT: the count in EBX[23:16] is valid
                e.ecx |= 1 << 31                        // hypervisor present
            case 0xB, 0x1F:
                continue  // written whole below
            case 0x8000_0008:
                e.ecx = (e.ecx & ~0xF0FF) | (coreShift << 12) | UInt32(maxVcpus - 1)
            case 0x8000_001E:
                e.eax = apicID                 // extended APIC id
                e.ebx = apicID & 0xFF          // core id; threads per core - 1 = 0 in EBX[15:8]
                e.ecx = 0                      // node 0; nodes per processor - 1 = 0 in ECX[10:8]
                e.edx = 0
            default:
                break
            }
            entries.append(e)
        }
        for function: UInt32 in [0xB, 0x1F] where maxBasic >= function {
            entries += extendedTopology(function: function, apicID: apicID, coreShift: coreShift,
                                        cores: UInt32(maxVcpus))
        }
        return entries
    }

    /// Leaf 0xB or 0x1F, subleaves 0 (SMT: 1 thread per core), 1 (core: `cores` per package, `coreShift`
    /// APIC id bits below the package) and 2 (level type 0: the end). EDX is the x2APIC id.
    private static func extendedTopology(function: UInt32, apicID: UInt32, coreShift: UInt32, cores: UInt32)
        -> [kvm_cpuid_entry2]
    {
        let levels: [(eax: UInt32, ebx: UInt32, ecx: UInt32)] = [
            (0, 1, 0x100),                 // level 0, type 1 (SMT)
            (coreShift, cores, 0x201),     // level 1, type 2 (core)
            (0, 0, 2),                     // level 2, type 0 (invalid: no more levels)
        ]
        return levels.enumerated().map { index, level in
            var e = kvm_cpuid_entry2()
            e.function = function
            e.index = UInt32(index)
            e.flags = UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
            e.eax = level.eax; e.ebx = level.ebx; e.ecx = level.ecx; e.edx = apicID
            return e
        }
    }

    /// MSRs at reset for a 64-bit guest (`KVM_SET_MSRS`): SYSENTER/SYSCALL targets cleared and fast
    /// strings enabled in IA32_MISC_ENABLE, as Firecracker does.
    func setBootMSRs() throws(KvmError) {
        let msrs: [(UInt32, UInt64)] = [
            (0x174, 0), (0x175, 0), (0x176, 0),                 // IA32_SYSENTER_CS/ESP/EIP
            (0xC000_0081, 0), (0xC000_0082, 0), (0xC000_0083, 0), (0xC000_0084, 0),  // STAR, LSTAR, CSTAR, SFMASK
            (0xC000_0102, 0),                                   // KERNEL_GS_BASE
            (0x1A0, 1),                                         // IA32_MISC_ENABLE: fast strings
        ]
        let header = MemoryLayout<kvm_msrs>.size, stride = MemoryLayout<kvm_msr_entry>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + msrs.count * stride, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: header + msrs.count * stride)
        buffer.storeBytes(of: UInt32(msrs.count), as: UInt32.self)
        for (i, (index, value)) in msrs.enumerated() {
            var entry = kvm_msr_entry()
            entry.index = index
            entry.data = value
            (buffer + header + i * stride).storeBytes(of: entry, as: kvm_msr_entry.self)
        }
        let set = try kvmIoctl("KVM_SET_MSRS") { ckvm_ioctl_ptr(fd, CKVM_SET_MSRS, buffer) }
        if set != Int32(msrs.count) {
            Log.debug("vcpu\(id): KVM_SET_MSRS set \(set) of \(msrs.count) MSRs")
        }
    }

    /// The x87 and SSE control words at their reset values (FCW 0x37F, MXCSR 0x1F80).
    func setBootFPU() throws(KvmError) {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        _ = try kvmIoctl("KVM_SET_FPU") { ckvm_ioctl_ptr(fd, CKVM_SET_FPU, &fpu) }
    }

    /// LINT0 as ExtINT (the 8259's output) and LINT1 as NMI, as on a PC.
    func setLintPins() throws(KvmError) {
        var lapic = kvm_lapic_state()
        _ = try kvmIoctl("KVM_GET_LAPIC") { ckvm_ioctl_ptr(fd, CKVM_GET_LAPIC, &lapic) }
        withUnsafeMutableBytes(of: &lapic.regs) { regs in
            func setDeliveryMode(_ offset: Int, _ mode: UInt32) {
                let value = regs.load(fromByteOffset: offset, as: UInt32.self)
                regs.storeBytes(of: (value & ~0x700) | (mode << 8), toByteOffset: offset, as: UInt32.self)
            }
            setDeliveryMode(0x350, 0b111)  // LVT LINT0: ExtINT
            setDeliveryMode(0x360, 0b100)  // LVT LINT1: NMI
        }
        _ = try kvmIoctl("KVM_SET_LAPIC") { ckvm_ioctl_ptr(fd, CKVM_SET_LAPIC, &lapic) }
    }
}
