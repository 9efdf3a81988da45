@testable import Cli
import CKvm
import Glibc
import Testing

/// A classic BPF interpreter for the few opcodes `BpfProgram` emits, run on a `struct seccomp_data`, as the
/// kernel runs a filter. It refuses what the kernel's checker refuses: unknown opcodes, loads outside the
/// 64-byte data or unaligned, jumps past the end, falling off the end.
enum BpfInterpreter {
    struct Fault: Error, CustomStringConvertible { let description: String }

    static func run(_ program: [BpfInstruction], nr: Int32, arch: UInt32 = CKVM_AUDIT_ARCH_X86_64,
                    args: [UInt64] = []) throws(Fault) -> UInt32 {
        var data = [UInt8](repeating: 0, count: 64)  // nr, arch, instruction_pointer, args[6]
        func store(_ value: UInt64, at offset: Int, bytes: Int) {
            for byte in 0..<bytes { data[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))) }
        }
        store(UInt64(UInt32(bitPattern: nr)), at: Int(ckvm_seccomp_data_nr_offset()), bytes: 4)
        store(UInt64(arch), at: Int(ckvm_seccomp_data_arch_offset()), bytes: 4)
        for (index, value) in args.enumerated() { store(value, at: Int(ckvm_seccomp_data_args_offset()) + 8 * index, bytes: 8) }

        var accumulator: UInt32 = 0
        var pc = 0
        while true {
            guard pc < program.count else { throw Fault(description: "ran off the end at \(pc)") }
            let instruction = program[pc]
            let k = Int(instruction.k)
            switch instruction.code {
            case BpfInstruction.loadWord:
                guard k % 4 == 0, k + 4 <= data.count else { throw Fault(description: "bad load offset \(k) at \(pc)") }
                accumulator = (0..<4).reduce(0) { $0 | UInt32(data[k + $1]) << (8 * UInt32($1)) }
            case BpfInstruction.jumpEqual:
                pc += Int(accumulator == instruction.k ? instruction.jt : instruction.jf)
            case BpfInstruction.jumpGreaterOrEqual:
                pc += Int(accumulator >= instruction.k ? instruction.jt : instruction.jf)
            case BpfInstruction.jumpAlways:
                pc += k
            case BpfInstruction.returnConstant:
                return instruction.k
            default:
                throw Fault(description: "unknown opcode \(instruction.code) at \(pc)")
            }
            pc += 1
        }
    }
}

@Suite struct SeccompFilterTests {
    static let pid: Int32 = 4242
    static let trap = CKVM_SECCOMP_RET_TRAP, allow = CKVM_SECCOMP_RET_ALLOW, kill = CKVM_SECCOMP_RET_KILL_PROCESS

    static func program(_ kind: ThreadKind, otherwise: UInt32 = trap) -> [BpfInstruction] {
        BpfProgram.compile(SeccompRules.rules(for: kind, pid: pid), otherwise: otherwise)
    }

    /// One call per alternative of `rule` (its arguments set as the alternative asks), or one call for an
    /// unconditional rule.
    static func sampleArguments(_ rule: SyscallRule) -> [[UInt64]] {
        guard !rule.isUnconditional else { return [[]] }
        return rule.alternatives.map { alternative in
            var args = [UInt64](repeating: 0, count: 6)
            for condition in alternative { args[condition.index] = UInt64(condition.value) }
            return args
        }
    }

    func verdict(_ kind: ThreadKind, _ nr: Int32, _ args: [UInt64] = []) throws -> UInt32 {
        try BpfInterpreter.run(Self.program(kind), nr: nr, args: args)
    }

    @Test func instructionsHaveTheKernelsLayout() {
        #expect(MemoryLayout<BpfInstruction>.size == MemoryLayout<sock_filter>.size)
        #expect(MemoryLayout<BpfInstruction>.stride == MemoryLayout<sock_filter>.stride)
        #expect(MemoryLayout<BpfInstruction>.offset(of: \.jt) == 2 && MemoryLayout<BpfInstruction>.offset(of: \.k) == 4)
        #expect(ckvm_seccomp_data_args_offset() == 16)
    }

    @Test(arguments: ThreadKind.allCases)
    func everyListedCallIsAllowedAndTheRestIsNot(kind: ThreadKind) throws {
        let rules = SeccompRules.rules(for: kind, pid: Self.pid)
        let program = Self.program(kind)
        #expect(program.count <= Int(BPF_MAXINSNS))
        for rule in rules {
            for args in Self.sampleArguments(rule) {
                #expect(try BpfInterpreter.run(program, nr: rule.number, args: args) == Self.allow, "\(kind): \(rule)")
            }
        }
        let listed = Set(rules.map(\.number))
        for nr in Int32(0)..<512 where !listed.contains(nr) {
            #expect(try BpfInterpreter.run(program, nr: nr, args: [1, 2, 3, 4, 5, 6]) == Self.trap, "\(kind): \(nr)")
        }
    }

    @Test(arguments: ThreadKind.allCases)
    func anotherArchitectureOrX32KillsTheProcess(kind: ThreadKind) throws {
        let program = Self.program(kind, otherwise: CKVM_SECCOMP_RET_LOG)
        #expect(try BpfInterpreter.run(program, nr: SYS_write, arch: 0x4000_0003) == Self.kill)  // i386
        #expect(try BpfInterpreter.run(program, nr: SYS_write | 0x4000_0000) == Self.kill)  // x32
        #expect(try BpfInterpreter.run(program, nr: SYS_write) == Self.allow)
        #expect(try BpfInterpreter.run(program, nr: SYS_getppid) == CKVM_SECCOMP_RET_LOG, "log mode returns LOG")
    }

    /// A signal that interrupts a sleep makes the kernel restart it through `restart_syscall`, on any thread.
    @Test(arguments: ThreadKind.allCases)
    func anInterruptedSleepMayRestart(kind: ThreadKind) throws {
        #expect(try verdict(kind, SYS_restart_syscall) == Self.allow, "\(kind)")
    }

    /// The process filter stays on every thread, so it must allow whatever a narrower kind allows.
    @Test func theProcessFilterAllowsEveryKindsCalls() throws {
        for kind in ThreadKind.allCases {
            for rule in SeccompRules.rules(for: kind, pid: Self.pid) {
                for args in Self.sampleArguments(rule) {
                    #expect(try verdict(.vmm, rule.number, args) == Self.allow, "\(kind): \(rule)")
                }
            }
        }
    }

    @Test func ioctlsAreAllowedByRequestNumber() throws {
        let run = UInt64(CKVM_RUN), createVm = UInt64(CKVM_CREATE_VM), tcsets = UInt64(CKVM_TCSETS)
        #expect(try verdict(.vcpu, SYS_ioctl, [7, run]) == Self.allow)
        #expect(try verdict(.vcpu, SYS_ioctl, [7, UInt64(CKVM_SET_GSI_ROUTING)]) == Self.allow)
        #expect(try verdict(.vcpu, SYS_ioctl, [7, createVm]) == Self.trap)
        #expect(try verdict(.vcpu, SYS_ioctl, [7, UInt64(CKVM_TUNSETIFF)]) == Self.trap)
        #expect(try verdict(.device, SYS_ioctl, [7, run]) == Self.trap)
        #expect(try verdict(.device, SYS_ioctl, [7, UInt64(CKVM_IRQFD)]) == Self.allow)
        // virtio-net: the TAP's offloads and queues change on a device or vCPU thread; creating one does not.
        for kind in [ThreadKind.device, .vcpu] {
            #expect(try verdict(kind, SYS_ioctl, [7, UInt64(CKVM_TUNSETOFFLOAD)]) == Self.allow)
            #expect(try verdict(kind, SYS_ioctl, [7, UInt64(CKVM_TUNSETQUEUE)]) == Self.allow)
        }
        #expect(try verdict(.device, SYS_ioctl, [7, UInt64(CKVM_TUNSETIFF)]) == Self.trap)
        #expect(try verdict(.api, SYS_ioctl, [7, UInt64(CKVM_GET_API_VERSION)]) == Self.trap)
        #expect(try verdict(.vmm, SYS_ioctl, [7, createVm]) == Self.allow)
        #expect(try verdict(.vmm, SYS_ioctl, [7, 0xDEAD_BEEF]) == Self.trap)
        // Restoring the terminal is allowed everywhere, on stdin only.
        for kind in ThreadKind.allCases {
            #expect(try verdict(kind, SYS_ioctl, [0, tcsets]) == Self.allow, "\(kind)")
        }
        #expect(try verdict(.api, SYS_ioctl, [1, tcsets]) == Self.trap)
        #expect(try verdict(.device, SYS_ioctl, [5, tcsets]) == Self.trap)
    }

    @Test func narrowKindsCannotOpenSpawnOrSignalOthers() throws {
        for kind in [ThreadKind.vcpu, .device, .api] {
            for nr in [SYS_openat, SYS_open, SYS_socket, SYS_clone, SYS_clone3, SYS_fork, SYS_execve, SYS_kill, SYS_ptrace, SYS_mount] {
                #expect(try verdict(kind, nr) == Self.trap, "\(kind): \(String(cString: ckvm_syscall_name(Int(nr))))")
            }
        }
        for nr in [SYS_execve, SYS_execveat, SYS_fork, SYS_vfork, SYS_kill, SYS_ptrace, SYS_process_vm_readv, SYS_mount] {
            #expect(try verdict(.vmm, nr) == Self.trap, "vmm: \(nr)")
        }
        // A thread may end the process with a fatal signal to itself; only the VMM's threads kick vCPUs.
        let own = UInt64(Self.pid), other = UInt64(Self.pid + 1)
        #expect(try verdict(.vcpu, SYS_tgkill, [own, 9, UInt64(SIGSYS)]) == Self.allow)
        #expect(try verdict(.vcpu, SYS_tgkill, [other, 9, UInt64(SIGSYS)]) == Self.trap)
        #expect(try verdict(.vcpu, SYS_tgkill, [own, 9, UInt64(ckvm_sigrtmin())]) == Self.trap)
        #expect(try verdict(.vmm, SYS_tgkill, [own, 9, UInt64(ckvm_sigrtmin())]) == Self.allow)
        #expect(try verdict(.vmm, SYS_tgkill, [other, 9, UInt64(ckvm_sigrtmin())]) == Self.trap)
    }

    @Test func argumentRulesOtherThanIoctl() throws {
        let punchHole = UInt64(CKVM_FALLOC_PUNCH_HOLE | CKVM_FALLOC_KEEP_SIZE)
        #expect(try verdict(.device, SYS_fallocate, [3, punchHole]) == Self.allow)
        #expect(try verdict(.device, SYS_fallocate, [3, 0]) == Self.trap, "growing the disk file")
        #expect(try verdict(.vmm, SYS_socket, [UInt64(AF_INET), 2]) == Self.allow)
        #expect(try verdict(.vmm, SYS_socket, [UInt64(AF_PACKET), 3]) == Self.trap)
        #expect(try verdict(.api, SYS_fcntl, [9, UInt64(F_SETFL)]) == Self.allow)
        #expect(try verdict(.api, SYS_fcntl, [9, UInt64(F_DUPFD)]) == Self.trap)
        #expect(try verdict(.vcpu, SYS_prctl, [UInt64(PR_GET_NAME)]) == Self.allow)
        #expect(try verdict(.vcpu, SYS_prctl, [UInt64(PR_SET_NAME)]) == Self.trap)
        #expect(try verdict(.vmm, SYS_prctl, [UInt64(PR_SET_DUMPABLE)]) == Self.trap)
    }

    /// virtio-blk's io_uring: device and vCPU threads may only submit and wait; the ring is set up, given
    /// its file, eventfd and restrictions, and enabled by the VMM's own threads — no other registration.
    @Test func ioUringIsSubmitOnlyOnDeviceThreads() throws {
        for kind in [ThreadKind.device, .vcpu] {
            #expect(try verdict(kind, SYS_io_uring_enter, [5, 1, 0]) == Self.allow, "\(kind)")
            #expect(try verdict(kind, SYS_io_uring_setup, [128, 0]) == Self.trap, "\(kind)")
            #expect(try verdict(kind, SYS_io_uring_register, [5, 4]) == Self.trap, "\(kind)")
        }
        #expect(try verdict(.api, SYS_io_uring_enter, [5, 1, 0]) == Self.trap)
        #expect(try verdict(.vmm, SYS_io_uring_setup, [128, 0]) == Self.allow)
        for opcode: UInt64 in [2, 4, 11, 12] { #expect(try verdict(.vmm, SYS_io_uring_register, [5, opcode]) == Self.allow) }
        // IORING_REGISTER_BUFFERS, _PERSONALITY, _IOWQ_AFF: not needed, not allowed.
        for opcode: UInt64 in [0, 9, 17] { #expect(try verdict(.vmm, SYS_io_uring_register, [5, opcode]) == Self.trap) }
    }

    /// A condition compares the low 32 bits, as the kernel reads these arguments (an ioctl request is an
    /// `unsigned int`): high bits neither help nor hurt.
    @Test func conditionsCompareTheLow32Bits() throws {
        #expect(try verdict(.vcpu, SYS_ioctl, [7, UInt64(CKVM_RUN) | 1 << 32]) == Self.allow)
        #expect(try verdict(.vcpu, SYS_ioctl, [7, UInt64(CKVM_RUN) + 1]) == Self.trap)
    }

    /// Every exit costs a `KVM_RUN` through both of a vCPU's filters: it is the first request each tests.
    @Test func kvmRunIsTestedFirst() {
        for kind in [ThreadKind.vcpu, .vmm] {
            let position = Self.program(kind).firstIndex { $0.code == BpfInstruction.jumpEqual && $0.k == UInt32(CKVM_RUN) }
            #expect(position == 9, "\(kind): KVM_RUN tested at instruction \(position ?? -1)")
        }
    }

    @Test func mergingTakesTheUnionOfAlternatives() {
        let a = SyscallRule.allow(SYS_ioctl, arg: 1, in: [1, 2]), b = SyscallRule.allow(SYS_ioctl, arg: 1, in: [2, 3])
        #expect(a.union(b).alternatives == [[ArgEquals(1, 1)], [ArgEquals(1, 2)], [ArgEquals(1, 3)]])
        #expect(a.union(.allow(SYS_ioctl)).isUnconditional)
        let merged = SeccompRules.merged([[.allow(SYS_read), a], [b, .allow(SYS_write)]])
        #expect(merged.map(\.number) == [SYS_read, SYS_ioctl, SYS_write])
    }

    @Test func multiConditionAlternativesNeedEveryCondition() throws {
        let rule = SyscallRule.allow(SYS_ioctl, allOf: [ArgEquals(0, 5), ArgEquals(1, 9), ArgEquals(2, 1)])
        let program = BpfProgram.compile([rule, .allow(SYS_ioctl + 1)], otherwise: Self.trap)
        #expect(try BpfInterpreter.run(program, nr: SYS_ioctl, args: [5, 9, 1]) == Self.allow)
        #expect(try BpfInterpreter.run(program, nr: SYS_ioctl, args: [5, 9, 0]) == Self.trap)
        #expect(try BpfInterpreter.run(program, nr: SYS_ioctl, args: [4, 9, 1]) == Self.trap)
        #expect(try BpfInterpreter.run(program, nr: SYS_ioctl + 1) == Self.allow, "the block is jumped over")
    }

    /// The SIGSYS report names calls from the build host's <asm/unistd_64.h>.
    @Test func syscallNames() {
        #expect(String(cString: ckvm_syscall_name(Int(SYS_getppid))) == "getppid")
        #expect(String(cString: ckvm_syscall_name(Int(SYS_ioctl))) == "ioctl")
        #expect(ckvm_syscall_name(-1) == nil && ckvm_syscall_name(100_000) == nil)
        for kind in ThreadKind.allCases {
            for rule in SeccompRules.rules(for: kind, pid: Self.pid) {
                #expect(ckvm_syscall_name(Int(rule.number)) != nil, "\(rule.number)")
            }
        }
    }
}
