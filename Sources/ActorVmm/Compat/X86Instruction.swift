/// What ``X86Decoder`` produces: one x86-64 instruction, its length, prefixes and operands.
///
/// The decoder knows the length and ModRM/SIB/displacement/immediate layout of every opcode in the
/// one-byte, 0F, 0F 38 and 0F 3A maps (legacy, VEX and EVEX encoded); it names only the instructions the
/// emulator handles or reports (``Mnemonic``). Operands are encodings, not values: a memory operand is
/// resolved to a linear address with ``MemoryOperand/linearAddress(registers:instructionEnd:segmentBase:)``.

/// A general-purpose register by its encoding number.
public enum Gpr: UInt8, CaseIterable, Sendable {
    case rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15
}

/// A segment register named by an override prefix. In 64-bit mode only FS and GS have a base.
public enum SegmentRegister: Sendable, Equatable {
    case es, cs, ss, ds, fs, gs
}

/// The legacy prefixes and REX byte in front of an opcode.
public struct Prefixes: Sendable, Equatable {
    /// F0.
    public var lock = false
    /// F2 (REPNE, or a mandatory prefix).
    public var repne = false
    /// F3 (REP/REPE, or a mandatory prefix).
    public var rep = false
    /// 66: 16-bit operands (or a mandatory prefix).
    public var operandSizeOverride = false
    /// 67: 32-bit addressing.
    public var addressSizeOverride = false
    /// The last segment override (2E, 36, 3E, 26, 64, 65).
    public var segment: SegmentRegister?
    /// The REX byte (40–4F) if it immediately precedes the opcode; a REX followed by another prefix is ignored.
    public var rex: UInt8?

    public init() {}

    public var rexW: Bool { (rex ?? 0) & 8 != 0 }
    public var rexR: Bool { (rex ?? 0) & 4 != 0 }
    public var rexX: Bool { (rex ?? 0) & 2 != 0 }
    public var rexB: Bool { (rex ?? 0) & 1 != 0 }
}

/// Which opcode map the opcode byte belongs to.
public enum OpcodeMap: Sendable, Equatable {
    case primary, map0F, map0F38, map0F3A
    /// A map only EVEX reaches (5 and 6, AVX512-FP16); decoded for length only.
    case evexOnly(UInt8)
    /// An AMD XOP map (8, 9, 10); decoded for length only.
    case xop(UInt8)
}

/// How the instruction was encoded.
public enum InstructionEncoding: Sendable, Equatable {
    case legacy
    /// VEX (C4/C5): `vvvv` already un-inverted, `l` the vector length bit, `w` the W bit, `pp` the implied
    /// mandatory prefix (0 none, 1 66, 2 F3, 3 F2).
    case vex(vvvv: UInt8, l: Bool, w: Bool, pp: UInt8)
    /// EVEX (62); decoded for length only (its compressed disp8 needs the instruction's tuple type).
    case evex
    /// AMD XOP (8F with ModRM.reg ≠ 0); decoded for length only.
    case xop
}

/// The ModRM byte's three fields (without REX extension).
public struct ModRM: Sendable, Equatable {
    public let mod: UInt8
    public let reg: UInt8
    public let rm: UInt8
    public init(_ byte: UInt8) { mod = byte >> 6; reg = (byte >> 3) & 7; rm = byte & 7 }
    public var byte: UInt8 { mod << 6 | reg << 3 | rm }
}

/// A memory operand: `segment:[base + index*scale + displacement]`, or `[rip + displacement]`.
public struct MemoryOperand: Sendable, Equatable {
    public var base: Gpr?
    public var index: Gpr?
    public var scale: UInt8 = 1
    public var displacement: Int64 = 0
    public var ripRelative = false
    /// The segment the access uses: the override, else SS for RSP/RBP-based addresses, else DS.
    public var segment: SegmentRegister = .ds
    /// 64, or 32 with an address-size prefix.
    public var addressSize: Int = 64

    public init() {}

    /// The linear address: the effective address (truncated to 32 bits for 32-bit addressing) plus the
    /// FS/GS base when `segment` is FS or GS (other segments have base 0 in 64-bit mode).
    /// `instructionEnd` is RIP after this instruction, the base of RIP-relative addressing.
    public func linearAddress(registers: GuestRegisters, instructionEnd: UInt64, segmentBase: UInt64) -> UInt64 {
        var address = UInt64(bitPattern: displacement)
        if ripRelative {
            address &+= instructionEnd
        } else {
            if let base { address &+= registers[base] }
            if let index { address &+= registers[index] &* UInt64(scale) }
        }
        if addressSize == 32 { address &= 0xFFFF_FFFF }
        if segment == .fs || segment == .gs { address &+= segmentBase }
        return address
    }
}

/// An operand encoded in ModRM.rm: a register number (its kind — general-purpose, XMM, … — depends on the
/// instruction) or memory.
public enum RmOperand: Sendable, Equatable {
    case register(UInt8)
    case memory(MemoryOperand)
}

/// Instructions the decoder names: the ones the emulator handles, and ones it reports by name.
public enum Mnemonic: String, Sendable, Equatable {
    case int3, int, into, int1, hlt, fwait, ud2, cpuid, rdmsr, wrmsr, rdtsc, rdtscp, syscall, sysret
    case clac, stac, xgetbv, xsetbv, invlpg, lgdt, lidt, sgdt, sidt, swapgs, wbinvd, invd
    case popcnt, lzcnt, tzcnt
    case ldmxcsr, stmxcsr, vldmxcsr, vstmxcsr
    case fxsave, fxrstor, xsave, xrstor, xsaveopt, xsavec, xsaves, xrstors, clflush, clflushopt
    case lfence, mfence, sfence
    case cmpxchg8b, cmpxchg16b, rdrand, rdseed
    case lar, lsl, verr, verw, sldt, str, lldt, ltr, rdpid
}

/// One decoded instruction.
public struct DecodedInstruction: Sendable, Equatable {
    /// Exactly the instruction's bytes (1–15).
    public var bytes: [UInt8]
    public var prefixes: Prefixes
    public var encoding: InstructionEncoding
    public var map: OpcodeMap
    public var opcode: UInt8
    public var modrm: ModRM?
    /// ModRM.reg extended by REX.R / VEX.R (0–15); nil without ModRM.
    public var reg: UInt8?
    /// ModRM.rm as an operand (register number extended by REX.B, or memory); nil without ModRM, and for
    /// EVEX memory operands (see ``InstructionEncoding/evex``).
    public var rm: RmOperand?
    /// Operand size in bits for general-purpose operands: 64 with REX.W, else 16 with 66, else 32.
    public var operandSize: Int
    /// The immediate, sign-extended, and its size in bytes (0 when there is none).
    public var immediate: Int64 = 0
    public var immediateSize = 0
    public var mnemonic: Mnemonic?

    public var length: Int { bytes.count }

    /// "0f 01 ca": the bytes for messages.
    public var hexBytes: String { Self.hex(bytes) }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: " ")
    }
}

/// Why bytes do not decode.
public enum DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The bytes end before the instruction does (the caller may fetch more).
    case truncated
    /// The instruction would be longer than 15 bytes (#GP on a real CPU).
    case tooLong
    /// Not a valid instruction in 64-bit mode (#UD on a real CPU), e.g. `06`, or VEX after a 66 prefix.
    case invalidOpcode
    /// A valid encoding this decoder does not take apart (EVEX maps other than 1, 2, 3, 5, 6; XOP maps
    /// other than 8, 9, 10).
    case unsupportedEncoding(String)

    public var description: String {
        switch self {
        case .truncated: "truncated instruction"
        case .tooLong: "instruction longer than 15 bytes"
        case .invalidOpcode: "invalid opcode in 64-bit mode"
        case .unsupportedEncoding(let what): "unsupported encoding (\(what))"
        }
    }
}

/// The registers instruction emulation reads and writes: the 16 general-purpose registers, RIP and
/// RFLAGS (the part of `struct kvm_regs` that matters here).
public struct GuestRegisters: Sendable, Equatable {
    public var gprs: [UInt64] = Array(repeating: 0, count: 16)
    public var rip: UInt64 = 0
    public var rflags: UInt64 = 0x2

    public init() {}

    public subscript(_ register: Gpr) -> UInt64 {
        get { gprs[Int(register.rawValue)] }
        set { gprs[Int(register.rawValue)] = newValue }
    }
}

/// RFLAGS bits the handlers touch.
public enum Rflags {
    public static let carry: UInt64 = 1 << 0
    public static let parity: UInt64 = 1 << 2
    public static let adjust: UInt64 = 1 << 4
    public static let zero: UInt64 = 1 << 6
    public static let sign: UInt64 = 1 << 7
    public static let trap: UInt64 = 1 << 8
    public static let overflow: UInt64 = 1 << 11
    public static let alignmentCheck: UInt64 = 1 << 18
    /// The six arithmetic status flags.
    public static let status: UInt64 = carry | parity | adjust | zero | sign | overflow
}
