import CKvm
import Glibc

/// Host compatibility mode: what ActorVMM changes to run stock Linux on a host whose KVM runs ring-0
/// guest code in its instruction emulator (kvm_pvm, nested, without VMX/SVM). docs/compat.md explains it.
///
/// Four parts: the VMM emulates the instructions that emulator rejects (``InstructionEmulator``, given
/// to ``VcpuManager``); the guest command line switches off what neither can run, or runs too slowly
/// (``guestCommandLine``); there is no in-kernel PIT (``wantsPit``); and CPUID hides KVM's
/// hypercall-based paravirtual features (``adjustedCPUID(_:)``).
public struct HostCompatibility: Sendable, Equatable {
    /// Whether this host needs compatibility mode (``detect(modules:cpuinfo:)``, unless forced).
    public var isNeeded: Bool

    public init(isNeeded: Bool) { self.isNeeded = isNeeded }

    /// Detects the host (what `--compat auto` uses).
    public static func detected() -> HostCompatibility { HostCompatibility(isNeeded: detect()) }

    /// True when `/dev/kvm` runs guest kernel code in an instruction emulator:
    /// 1. `<modules>/kvm_pvm` exists: the PVM module is loaded (or built in with parameters) — this host;
    /// 2. otherwise `kvm_intel` or `kvm_amd` is loaded: hardware virtualisation, not needed;
    /// 3. otherwise the CPU flags in `cpuinfo` decide: with neither `vmx` nor `svm`, no hardware-assisted
    ///    KVM can exist here, so any `/dev/kvm` is a software one and gets the same treatment.
    /// Either answer can be overridden (the CLI's `--compat on|off`).
    public static func detect(modules: String = "/sys/module", cpuinfo: String = "/proc/cpuinfo") -> Bool {
        if exists(modules + "/kvm_pvm") { return true }
        if exists(modules + "/kvm_intel") || exists(modules + "/kvm_amd") { return false }
        guard let text = readText(cpuinfo) else { return false }
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            let flags = line.split(separator: " ")
            return !flags.contains("vmx") && !flags.contains("svm")
        }
        return false
    }

    /// Parameters appended to the guest's command line in compatibility mode (the prototype's list, which
    /// got Debian's 6.1 cloud kernel to "Run /init"). Why each:
    ///
    /// - `noxsave`: the kernel saves and restores FPU state with FXSAVE/FXRSTOR instead of XSAVE/XRSTOR(S);
    ///   the host's emulator rejects `xrstor`, which the kernel executes at boot and on every context
    ///   switch. Cost: no XSAVE-managed state in the guest (AVX, AVX-512, PKU), so no AVX in user space.
    /// - `clearcpuid=…`: clearing these feature bits in the leaves given to `KVM_SET_CPUID2` does not
    ///   switch them off in the guest on this host (the prototype's finding), so the kernel sees the
    ///   host's features and patches in (alternatives) or selects (crypto, RAID, CRC drivers) instructions
    ///   that ring 0 then executes in the host's emulator, which implements only a few SSE moves:
    ///   - `cx16` (`cmpxchg16b`: SLUB's lockless freelists, per-CPU double-word cmpxchg),
    ///     `smap` (`stac`/`clac` around every user-memory access), `popcnt` (`hweight*`): ActorVMM
    ///     emulates these, but each costs a VM exit and a few ioctls; `popcnt` and `stac`/`clac` are on
    ///     hot paths, so the features stay off;
    ///   - `erms`, `fsrm`: `memcpy`/`memset`/`copy_user` become single `rep movsb`/`rep stosb`; kept off
    ///     as in the prototype (not re-measured);
    ///   - `ssse3`, `sse4_1`, `sse4_2`, `avx`, `avx2`, `aes`, `pclmulqdq`, `sha_ni`: SIMD crypto, CRC32C
    ///     and RAID6 code the kernel picks by CPUID and runs in ring 0;
    ///   - `bmi1`, `bmi2`, `adx`: `tzcnt`/`andn`/`shlx`/`mulx`/`adcx`… the compiler or alternatives use.
    ///   Cost: the guest uses generic C code for crypto and checksums (slower on real hardware; here it is
    ///   the only code that runs at all).
    /// - `cryptomgr.notests=1`: skips the crypto self-tests, which run every algorithm at boot — minutes of
    ///   emulated ring-0 code here. Cost: no boot-time self-check of crypto implementations.
    /// - `init_on_alloc=0`: Debian zeroes every page and slab allocation by default; in an emulated ring 0
    ///   that is a large share of boot time. Cost: allocations are not pre-zeroed (the kernel default).
    /// - `initcall_blacklist=trace_eval_init,ftrace_check_for_weak_functions,load_system_certificate_list`:
    ///   skips three slow initcalls — tracepoint enum-map updates, the ftrace scan for weak functions,
    ///   and parsing the built-in X.509 certificates (RSA/SHA in emulated ring 0). Cost: trace output shows
    ///   raw enum values, ftrace may list weak-function stubs, and module signatures cannot be checked
    ///   against the built-in keys (fine for unsigned test modules; not for Secure Boot setups).
    public static let guestCommandLine: [String] = [
        "noxsave",
        "clearcpuid=cx16,smap,popcnt,erms,fsrm,ssse3,sse4_1,sse4_2,avx,avx2,aes,pclmulqdq,bmi1,bmi2,adx,sha_ni",
        "cryptomgr.notests=1",
        "init_on_alloc=0",
        "initcall_blacklist=trace_eval_init,ftrace_check_for_weak_functions,load_system_certificate_list",
    ]

    /// What to append to the guest's command line: ``guestCommandLine`` when needed, else nothing.
    public var commandLineAdditions: [String] { isNeeded ? Self.guestCommandLine : [] }

    /// The KVM paravirtual features (CPUID 0x4000_0001 EAX) behind which Linux makes `vmcall`/`vmmcall`
    /// hypercalls during boot and normal running (the optional `ptp_kvm` clock-pairing hypercall has no
    /// feature bit and is not covered): PV_UNHALT (bit 7: paravirtual spinlocks kick a halted vCPU with `KVM_HC_KICK_CPU`),
    /// PV_SEND_IPI (bit 11: IPIs as `KVM_HC_SEND_IPI`) and PV_SCHED_YIELD (bit 13: `KVM_HC_SCHED_YIELD`).
    /// This host's emulator never completes a hypercall from ring 0: the vCPU stays on the `vmcall`
    /// without an exit to the VMM (seen with 2 vCPUs: the application processor's first IPI hung the boot).
    /// Without these bits Linux sends IPIs through the local APIC, which the in-kernel LAPIC handles.
    public static let hypercallFeatures: UInt32 = (1 << 7) | (1 << 11) | (1 << 13)

    /// The CPUID leaves for the guest: `entries` with ``hypercallFeatures`` cleared in compatibility mode,
    /// unchanged otherwise.
    public func adjustedCPUID(_ entries: [kvm_cpuid_entry2]) -> [kvm_cpuid_entry2] {
        guard isNeeded else { return entries }
        return entries.map { entry in
            var entry = entry
            if entry.function == 0x4000_0001 { entry.eax &= ~Self.hypercallFeatures }
            return entry
        }
    }

    /// Whether to create the in-kernel i8254 PIT: false in compatibility mode (the prototype ran without
    /// it; Linux calibrates and keeps time with the TSC and the LAPIC timer instead).
    public var wantsPit: Bool { !isNeeded }

    /// The instruction emulator for `vm` when compatibility mode is on, else nil (for ``VcpuManager``).
    public func emulator(for vm: Vm) -> InstructionEmulator? { isNeeded ? InstructionEmulator(vm: vm) : nil }

    private static func exists(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0
    }

    private static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while data.count < 4 << 20 {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }
}
