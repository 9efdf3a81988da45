import CKvm

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter` (code, jt, jf, k: 8 bytes).
struct BpfInstruction: Equatable, Sendable {
    var code: UInt16
    var jt: UInt8
    var jf: UInt8
    var k: UInt32

    // Opcodes (linux/bpf_common.h): the few a seccomp filter needs.
    static let loadWord: UInt16 = 0x20  // BPF_LD | BPF_W | BPF_ABS: A = data[k..k+4]
    static let jumpEqual: UInt16 = 0x15  // BPF_JMP | BPF_JEQ | BPF_K: A == k ? jt : jf
    static let jumpGreaterOrEqual: UInt16 = 0x35  // BPF_JMP | BPF_JGE | BPF_K: A >= k ? jt : jf
    static let jumpAlways: UInt16 = 0x05  // BPF_JMP | BPF_JA: skip k instructions
    static let returnConstant: UInt16 = 0x06  // BPF_RET | BPF_K: return k

    static func load(offset: UInt32) -> Self { Self(code: loadWord, jt: 0, jf: 0, k: offset) }
    static func jumpIfEqual(_ value: UInt32, then: UInt8, else: UInt8) -> Self {
        Self(code: jumpEqual, jt: then, jf: `else`, k: value)
    }
    static func jump(over count: UInt32) -> Self { Self(code: jumpAlways, jt: 0, jf: 0, k: count) }
    static func ret(_ action: UInt32) -> Self { Self(code: returnConstant, jt: 0, jf: 0, k: action) }
}

/// `arg(index) == value`, comparing the low 32 bits of the argument. Every argument a filter here looks at
/// is a 32-bit `int` or `unsigned int` in the kernel (an ioctl request, an fd, a prctl option, a socket
/// domain), so the kernel ignores the high half too.
struct ArgEquals: Hashable, Sendable {
    let index: Int
    let value: UInt32

    init(_ index: Int, _ value: UInt32) {
        precondition((0..<6).contains(index), "a system call has arguments 0 to 5")
        self.index = index
        self.value = value
    }
}

/// One allowed system call: unconditionally (`alternatives` empty), or when all conditions of at least
/// one alternative hold.
struct SyscallRule: Equatable, Sendable {
    let number: Int32
    let alternatives: [[ArgEquals]]

    var isUnconditional: Bool { alternatives.isEmpty }

    /// Allows `number` whatever its arguments.
    static func allow(_ number: Int32) -> Self { Self(number: number, alternatives: []) }
    /// Allows `number` when argument `index` is one of `values` (ioctl requests, prctl options, …).
    static func allow(_ number: Int32, arg index: Int, in values: [UInt]) -> Self {
        Self(number: number, alternatives: values.map { [ArgEquals(index, UInt32(truncatingIfNeeded: $0))] })
    }
    /// Allows `number` when every condition holds.
    static func allow(_ number: Int32, allOf conditions: [ArgEquals]) -> Self {
        Self(number: number, alternatives: [conditions])
    }

    /// The rule that allows what either allows (the union of two thread kinds' rules for one call).
    func union(_ other: SyscallRule) -> SyscallRule {
        precondition(number == other.number)
        if isUnconditional || other.isUnconditional { return .init(number: number, alternatives: []) }
        var merged = alternatives
        for alternative in other.alternatives where !merged.contains(alternative) { merged.append(alternative) }
        return .init(number: number, alternatives: merged)
    }
}

/// Compiles allow-lists into seccomp programs.
///
/// Layout: the architecture must be x86-64 and the call number below the x32 bit, else the process is
/// killed (whatever the mode: no ActorVMM code makes such calls). Then, per rule in list order, an
/// unconditional call is `jeq nr → ret ALLOW`; a conditional one jumps into its block when the number
/// matches (and over it otherwise), where each argument is loaded once and compared with its allowed
/// values, and a call that matches none returns `otherwise`. Anything else returns `otherwise`. The
/// accumulator holds the call number whenever a rule's test runs: a block never falls through.
enum BpfProgram {
    static let x32SyscallBit: UInt32 = 0x4000_0000

    static func compile(_ rules: [SyscallRule], otherwise: UInt32) -> [BpfInstruction] {
        var program: [BpfInstruction] = [
            .load(offset: ckvm_seccomp_data_arch_offset()),
            .jumpIfEqual(CKVM_AUDIT_ARCH_X86_64, then: 1, else: 0),
            .ret(CKVM_SECCOMP_RET_KILL_PROCESS),
            .load(offset: ckvm_seccomp_data_nr_offset()),
            BpfInstruction(code: BpfInstruction.jumpGreaterOrEqual, jt: 0, jf: 1, k: x32SyscallBit),
            .ret(CKVM_SECCOMP_RET_KILL_PROCESS),
        ]
        var seen: Set<Int32> = []
        for rule in rules {
            precondition(seen.insert(rule.number).inserted, "system call \(rule.number) listed twice: merge its rules")
            if rule.isUnconditional {
                program += [.jumpIfEqual(UInt32(rule.number), then: 0, else: 1), .ret(CKVM_SECCOMP_RET_ALLOW)]
            } else {
                let block = conditionBlock(rule.alternatives, otherwise: otherwise)
                program += [.jumpIfEqual(UInt32(rule.number), then: 1, else: 0), .jump(over: UInt32(block.count))]
                program += block
            }
        }
        program.append(.ret(otherwise))
        precondition(program.count <= Int(BPF_MAXINSNS), "seccomp program of \(program.count) instructions is too long")
        return program
    }

    /// The argument checks of one call: single-condition alternatives grouped by argument (one load, then
    /// `jeq value → ret ALLOW` pairs), then the multi-condition ones (`ld; jeq` per condition, a failed
    /// test skipping to the next alternative), then `ret otherwise`.
    static func conditionBlock(_ alternatives: [[ArgEquals]], otherwise: UInt32) -> [BpfInstruction] {
        var block: [BpfInstruction] = []
        var singles: [Int: [UInt32]] = [:]
        var order: [Int] = []
        for alternative in alternatives where alternative.count == 1 {
            let condition = alternative[0]
            if singles[condition.index] == nil { order.append(condition.index) }
            if !singles[condition.index, default: []].contains(condition.value) {
                singles[condition.index, default: []].append(condition.value)
            }
        }
        for index in order {
            block.append(.load(offset: argumentOffset(index)))
            for value in singles[index, default: []] { block += [.jumpIfEqual(value, then: 0, else: 1), .ret(CKVM_SECCOMP_RET_ALLOW)] }
        }
        for alternative in alternatives where alternative.count > 1 {
            let length = alternative.count * 2 + 1
            for (position, condition) in alternative.enumerated() {
                let remaining = length - (position * 2 + 2)  // instructions after this jeq, up to and including the ret
                block += [.load(offset: argumentOffset(condition.index)),
                          .jumpIfEqual(condition.value, then: 0, else: UInt8(remaining))]
            }
            block.append(.ret(CKVM_SECCOMP_RET_ALLOW))
        }
        block.append(.ret(otherwise))
        return block
    }

    /// Where the low 32 bits of argument `index` are in `struct seccomp_data` (x86-64 is little-endian).
    static func argumentOffset(_ index: Int) -> UInt32 { ckvm_seccomp_data_args_offset() + UInt32(index) * 8 }
}
