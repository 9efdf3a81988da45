import ActorVmm
import CKvm
import EpollLoop
import Glibc
import Synchronization

/// `--seccomp true|false|log`, as Cloud Hypervisor's: what a system call outside the thread's allow-list does.
enum SeccompMode: String, Equatable, Sendable {
    /// The call is not made: SIGSYS, reported on stderr (thread, call), and the process ends by SIGSYS.
    case trap = "true"
    /// No filters.
    case off = "false"
    /// The call is made, and the kernel logs it (audit: `type=1326 … syscall=N`, in dmesg or the journal).
    case log = "log"

    /// The filters' action for a call outside their lists.
    var action: UInt32? {
        switch self {
        case .trap: CKVM_SECCOMP_RET_TRAP
        case .log: CKVM_SECCOMP_RET_LOG
        case .off: nil
        }
    }
}

/// One process's compiled filters. Built and installed on the main thread before any other thread exists
/// (``installProcessFilter()``); threads of the narrower kinds add theirs as they start (``threadStart(_:)``).
final class SeccompPolicy: Sendable {
    let mode: SeccompMode
    let programs: [ThreadKind: [BpfInstruction]]
    /// `ACTOR_VMM_SECCOMP_SELFTEST=<kind>` (for the end-to-end tests): right after a thread of that kind
    /// installs its filter, it makes one call no list allows (getppid).
    let selfTest: ThreadKind?

    /// The environment variable that asks for ``selfTest``.
    static let selfTestVariable = "ACTOR_VMM_SECCOMP_SELFTEST"

    init(mode: SeccompMode, action: UInt32, pid: Int32, selfTest: ThreadKind?) {
        self.mode = mode
        self.selfTest = selfTest
        var programs: [ThreadKind: [BpfInstruction]] = [:]
        for kind in ThreadKind.allCases {
            programs[kind] = BpfProgram.compile(SeccompRules.rules(for: kind, pid: pid), otherwise: action)
        }
        self.programs = programs
    }

    /// Installs the process filter (the ``ThreadKind/vmm`` program) on every thread, and with `--seccomp
    /// true` the SIGSYS reporter first.
    func installProcessFilter() throws(Errno) {
        if mode == .trap {
            let result = ckvm_seccomp_install_reporter { Terminal.restore() }
            guard result == 0 else { throw Errno(rawValue: result) }
        }
        let result = Self.install(programs[.vmm]!, flags: CKVM_SECCOMP_FILTER_FLAG_TSYNC)
        guard result == 0 else { throw Errno(rawValue: result > 0 ? EBUSY : -result) }  // > 0: a thread id
        if selfTest == .vmm { _ = ckvm_seccomp_forbidden_call() }
    }

    /// Adds `kind`'s filter to the calling thread. A failure here (the process filter went on, so seccomp
    /// works) ends the process: a thread must not run without its filter.
    func installThreadFilter(_ kind: ThreadKind) {
        free(malloc(64))  // glibc may read /sys/devices/system/cpu/online as a thread first allocates
        let result = Self.install(programs[kind]!, flags: 0)
        guard result == 0 else {  // without TSYNC, never positive
            Terminal.restore()
            printError("seccomp: cannot install the \(kind.rawValue) filter: \(Errno(rawValue: -result))")
            _exit(1)
        }
        if selfTest == kind { _ = ckvm_seccomp_forbidden_call() }
    }

    /// 0, a negated errno value, or (TSYNC) the positive id of a thread that could not be synchronised.
    private static func install(_ program: [BpfInstruction], flags: UInt32) -> Int32 {
        precondition(MemoryLayout<BpfInstruction>.stride == MemoryLayout<sock_filter>.stride)
        return program.withUnsafeBufferPointer { buffer in
            // SAFETY: BpfInstruction has sock_filter's layout (u16, u8, u8, u32; checked above and in the
            // tests); the kernel copies the program during the call.
            let instructions = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: sock_filter.self)
            let result = ckvm_seccomp_install(instructions, UInt16(buffer.count), flags)
            return result
        }
    }
}

/// The process's policy, for the code that starts threads. Nil with `--seccomp false`, and in unit tests.
enum Seccomp {
    private static let policy = Mutex<SeccompPolicy?>(nil)

    /// Builds the filters for `mode` and installs the process filter (main thread, before other threads).
    static func start(_ mode: SeccompMode) throws(Errno) {
        guard let action = mode.action else { return }
        let selfTest = getenv(SeccompPolicy.selfTestVariable).flatMap { ThreadKind(rawValue: String(cString: $0)) }
        let policy = SeccompPolicy(mode: mode, action: action, pid: getpid(), selfTest: selfTest)
        try policy.installProcessFilter()
        self.policy.withLock { $0 = policy }
        let sizes = ThreadKind.allCases.map { "\($0.rawValue) \(policy.programs[$0]!.count)" }.joined(separator: ", ")
        Log.info("seccomp: filters on (--seccomp \(mode.rawValue)); BPF instructions: \(sizes)")
    }

    /// What a thread of `kind` runs first: installing its filter. Nil when there are no filters.
    static func threadStart(_ kind: ThreadKind) -> (@Sendable () -> Void)? {
        guard let policy = policy.withLock({ $0 }) else { return nil }
        return { policy.installThreadFilter(kind) }
    }
}
