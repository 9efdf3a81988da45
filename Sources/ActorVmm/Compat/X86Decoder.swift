/// A table-driven x86-64 instruction decoder for 64-bit mode.
///
/// `decode` takes the bytes at RIP (up to 15 are looked at) and returns the instruction's length, prefixes,
/// opcode, ModRM operands, immediate and — for the instructions the emulator handles or reports — its
/// mnemonic. It never traps on any input: bytes that end early are ``DecodeError/truncated``, more than 15
/// bytes ``DecodeError/tooLong``, opcodes invalid in 64-bit mode ``DecodeError/invalidOpcode``
/// (`Tests/ActorVmmTests/X86DecoderFuzzTests.swift` feeds it random bytes to keep it that way).
///
/// Layout rules it follows (Intel SDM vol. 2, ch. 2):
/// - legacy prefixes in any order; a REX byte counts only when it immediately precedes the opcode;
/// - the opcode in the one-byte map, or after `0F`, `0F 38`, `0F 3A`; VEX (`C4`/`C5`) and EVEX (`62`)
///   carry R/X/B/W and the map in their payload and may not follow 66, F2, F3, F0 or REX;
/// - ModRM, then SIB when ModRM.rm is 100 (not with mod 11), then disp8 (mod 01) or disp32 (mod 10,
///   mod 00 with rm 101 — RIP-relative — or SIB base 101 — no base);
/// - the immediate whose size the opcode table gives (``OpcodeShape``).
///
/// Checked against objdump on every distinct instruction of Debian's 6.1 vmlinux (571,628) and of libc,
/// libm and libcrypto (`X86DecoderCorpusTests`).
public enum X86Decoder {
    /// The architectural limit on an instruction's length.
    public static let maximumLength = 15

    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> DecodedInstruction {
        var cursor = ByteCursor(bytes: bytes)
        var prefixes = Prefixes()

        // Legacy prefixes and REX.
        var byte: UInt8
        prefixLoop: while true {
            byte = try cursor.next()
            switch byte {
            case 0xF0: prefixes.lock = true
            case 0xF2: prefixes.repne = true
            case 0xF3: prefixes.rep = true
            case 0x66: prefixes.operandSizeOverride = true
            case 0x67: prefixes.addressSizeOverride = true
            case 0x26: prefixes.segment = .es
            case 0x2E: prefixes.segment = .cs
            case 0x36: prefixes.segment = .ss
            case 0x3E: prefixes.segment = .ds
            case 0x64: prefixes.segment = .fs
            case 0x65: prefixes.segment = .gs
            case 0x40...0x4F:
                prefixes.rex = byte
                continue prefixLoop
            default:
                break prefixLoop
            }
            prefixes.rex = nil  // a REX followed by a legacy prefix is ignored
        }

        // Opcode, through the escapes.
        var map = OpcodeMap.primary
        var encoding = InstructionEncoding.legacy
        var opcode = byte
        var rexR = prefixes.rexR, rexX = prefixes.rexX, rexB = prefixes.rexB, rexW = prefixes.rexW
        switch byte {
        case 0x0F:
            let second = try cursor.next()
            switch second {
            case 0x38: map = .map0F38; opcode = try cursor.next()
            case 0x3A: map = .map0F3A; opcode = try cursor.next()
            default: map = .map0F; opcode = second
            }
        case 0xC4, 0xC5:
            try rejectPrefixesBeforeVex(prefixes)
            let p1 = try cursor.next()
            rexR = p1 & 0x80 == 0
            let p2: UInt8
            if byte == 0xC5 {
                map = .map0F
                p2 = p1
                rexW = false
            } else {
                rexX = p1 & 0x40 == 0
                rexB = p1 & 0x20 == 0
                switch p1 & 0x1F {
                case 1: map = .map0F
                case 2: map = .map0F38
                case 3: map = .map0F3A
                default: throw .invalidOpcode
                }
                p2 = try cursor.next()
                rexW = p2 & 0x80 != 0
            }
            encoding = .vex(vvvv: (~p2 >> 3) & 0xF, l: p2 & 4 != 0, w: rexW, pp: p2 & 3)
            opcode = try cursor.next()
        case 0x62:
            try rejectPrefixesBeforeVex(prefixes)
            let p0 = try cursor.next()
            let p1 = try cursor.next()
            _ = try cursor.next()  // P2: z, L'L, b, V', aaa
            rexR = p0 & 0x80 == 0
            rexX = p0 & 0x40 == 0
            rexB = p0 & 0x20 == 0
            rexW = p1 & 0x80 != 0
            switch p0 & 7 {
            case 1: map = .map0F
            case 2: map = .map0F38
            case 3: map = .map0F3A
            case 5, 6: map = .evexOnly(p0 & 7)
            default: throw .unsupportedEncoding("EVEX map \(p0 & 7)")
            }
            encoding = .evex
            opcode = try cursor.next()
        case 0x8F where (try cursor.peek() >> 3) & 7 != 0:
            // POP r/m is 8F /0; any other ModRM.reg makes 8F the AMD XOP escape, laid out like a 3-byte VEX.
            try rejectPrefixesBeforeVex(prefixes)
            let p1 = try cursor.next()
            guard (8...10).contains(p1 & 0x1F) else { throw .unsupportedEncoding("XOP map \(p1 & 0x1F)") }
            rexR = p1 & 0x80 == 0
            rexX = p1 & 0x40 == 0
            rexB = p1 & 0x20 == 0
            let p2 = try cursor.next()
            rexW = p2 & 0x80 != 0
            map = .xop(p1 & 0x1F)
            encoding = .xop
            opcode = try cursor.next()
        default:
            break
        }

        let shape: OpcodeShape
        switch map {
        case .primary: shape = OpcodeTables.primary[Int(opcode)]
        case .map0F: shape = OpcodeTables.map0F[Int(opcode)]
        case .map0F38: shape = OpcodeTables.map0F38[Int(opcode)]
        case .map0F3A: shape = OpcodeTables.map0F3A[Int(opcode)]
        case .evexOnly: shape = .modrm
        case .xop(let number): shape = number == 8 ? .modrmImm8 : (number == 9 ? .modrm : .modrmImm32)
        }
        switch shape {
        case .invalid, .prefix, .escape: throw .invalidOpcode
        default: break
        }
        if encoding != .legacy {
            // VEX and EVEX encode only ModRM forms, and VEX 0F 77 (vzeroupper/vzeroall).
            let vzero = map == .map0F && opcode == 0x77 && encoding != .evex
            guard shape == .modrm || shape == .modrmImm8 || shape == .modrmImm32 || vzero else { throw .invalidOpcode }
        }

        let operandSize: Int
        if case .legacy = encoding {
            operandSize = rexW ? 64 : (prefixes.operandSizeOverride ? 16 : 32)
        } else {
            operandSize = rexW ? 64 : 32
        }

        // ModRM, SIB, displacement.
        var modrm: ModRM?
        var reg: UInt8?
        var rm: RmOperand?
        if shape.hasModRM {
            let m = ModRM(try cursor.next())
            modrm = m
            reg = m.reg | (rexR ? 8 : 0)
            // mov to/from control and debug registers (0F 20–23) ignore ModRM.mod: the operand is a register.
            let registerOnly = map == .map0F && (0x20...0x23).contains(opcode)
            if m.mod == 3 || registerOnly {
                rm = .register(m.rm | (rexB ? 8 : 0))
            } else {
                var memory = MemoryOperand()
                memory.addressSize = prefixes.addressSizeOverride ? 32 : 64
                var displacementSize = m.mod == 1 ? 1 : (m.mod == 2 ? 4 : 0)
                if m.rm == 4 {
                    let sib = try cursor.next()
                    memory.scale = 1 << (sib >> 6)
                    let index = ((sib >> 3) & 7) | (rexX ? 8 : 0)
                    if index != 4 { memory.index = Gpr(rawValue: index) }  // 100 without REX.X: no index
                    if sib & 7 == 5 && m.mod == 0 {
                        displacementSize = 4  // no base, disp32
                    } else {
                        memory.base = Gpr(rawValue: (sib & 7) | (rexB ? 8 : 0))
                    }
                } else if m.rm == 5 && m.mod == 0 {
                    memory.ripRelative = true
                    displacementSize = 4
                } else {
                    memory.base = Gpr(rawValue: m.rm | (rexB ? 8 : 0))
                }
                memory.displacement = try cursor.signed(displacementSize)
                let stackBased = memory.base == .rsp || memory.base == .rbp
                memory.segment = prefixes.segment ?? (stackBased ? .ss : .ds)
                rm = encoding == .evex ? nil : .memory(memory)
            }
        }

        // Immediate.
        let sizeZ = operandSize == 16 ? 2 : 4
        let groupTest = (modrm?.reg ?? 7) <= 1
        let immediateSize: Int
        switch shape {
        case .modrmImm8, .imm8: immediateSize = 1
        case .modrmImmZ, .immZ: immediateSize = sizeZ
        case .imm16: immediateSize = 2
        case .immV: immediateSize = operandSize == 64 ? 8 : sizeZ
        case .rel32: immediateSize = sizeZ
        case .modrmImm32: immediateSize = 4
        case .moffs: immediateSize = prefixes.addressSizeOverride ? 4 : 8
        case .enter: immediateSize = 3
        case .group3Byte: immediateSize = groupTest ? 1 : 0
        case .group3Full: immediateSize = groupTest ? sizeZ : 0
        default: immediateSize = 0
        }
        let immediate = try cursor.signed(immediateSize)

        var instruction = DecodedInstruction(
            bytes: Array(bytes[0..<cursor.position]), prefixes: prefixes, encoding: encoding, map: map,
            opcode: opcode, modrm: modrm, reg: reg, rm: rm, operandSize: operandSize,
            immediate: immediate, immediateSize: immediateSize)
        instruction.mnemonic = identify(instruction, rexW: rexW)
        return instruction
    }

    /// VEX and EVEX after 66, F2, F3, F0 or REX are #UD.
    private static func rejectPrefixesBeforeVex(_ prefixes: Prefixes) throws(DecodeError) {
        if prefixes.operandSizeOverride || prefixes.rep || prefixes.repne || prefixes.lock || prefixes.rex != nil {
            throw .invalidOpcode
        }
    }

    /// Names the instructions the emulator handles or reports; nil for everything else.
    static func identify(_ i: DecodedInstruction, rexW: Bool) -> Mnemonic? {
        let p = i.prefixes
        let memoryForm = i.modrm.map { $0.mod != 3 } ?? false
        let reg = i.modrm?.reg ?? 0
        if case .vex = i.encoding {
            guard i.map == .map0F, i.opcode == 0xAE, memoryForm, case .vex(_, false, _, 0) = i.encoding else { return nil }
            return reg == 2 ? .vldmxcsr : (reg == 3 ? .vstmxcsr : nil)
        }
        guard case .legacy = i.encoding else { return nil }
        let noMandatoryPrefix = !p.operandSizeOverride && !p.rep && !p.repne
        switch (i.map, i.opcode) {
        case (.primary, 0xCC): return .int3
        case (.primary, 0xCD): return .int
        case (.primary, 0xF1): return .int1
        case (.primary, 0xF4): return .hlt
        case (.primary, 0x9B): return .fwait
        case (.map0F, 0x0B): return .ud2
        case (.map0F, 0xA2): return .cpuid
        case (.map0F, 0x30): return .wrmsr
        case (.map0F, 0x31): return .rdtsc
        case (.map0F, 0x32): return .rdmsr
        case (.map0F, 0x05): return .syscall
        case (.map0F, 0x07): return .sysret
        case (.map0F, 0x08): return .invd
        case (.map0F, 0x09): return .wbinvd
        case (.map0F, 0x00):
            guard !p.rep && !p.repne else { return nil }
            return [.sldt, .str, .lldt, .ltr, .verr, .verw, nil, nil][Int(reg)]
        case (.map0F, 0x02): return !p.rep && !p.repne ? .lar : nil
        case (.map0F, 0x03): return !p.rep && !p.repne ? .lsl : nil
        case (.map0F, 0xB8): return p.rep && !p.repne ? .popcnt : nil
        case (.map0F, 0xBC): return p.rep && !p.repne ? .tzcnt : nil
        case (.map0F, 0xBD): return p.rep && !p.repne ? .lzcnt : nil
        case (.map0F, 0x01):
            if memoryForm { return [.sgdt, .sidt, .lgdt, .lidt, nil, nil, nil, .invlpg][Int(reg)] }
            switch i.modrm?.byte {
            case 0xCA: return .clac
            case 0xCB: return .stac
            case 0xD0: return .xgetbv
            case 0xD1: return .xsetbv
            case 0xF8: return .swapgs
            case 0xF9: return .rdtscp
            default: return nil
            }
        case (.map0F, 0xAE):
            if memoryForm {
                if reg == 7 && p.operandSizeOverride && !p.rep && !p.repne { return .clflushopt }
                guard noMandatoryPrefix else { return nil }
                return [.fxsave, .fxrstor, .ldmxcsr, .stmxcsr, .xsave, .xrstor, .xsaveopt, .clflush][Int(reg)]
            }
            guard noMandatoryPrefix else { return nil }
            return [nil, nil, nil, nil, nil, .lfence, .mfence, .sfence][Int(reg)]
        case (.map0F, 0xC7):
            if memoryForm {
                guard !p.rep && !p.repne else { return nil }
                return [nil, rexW ? .cmpxchg16b : .cmpxchg8b, nil, .xrstors, .xsavec, .xsaves, nil, nil][Int(reg)]
            }
            if reg == 7 && p.rep && !p.repne && !p.operandSizeOverride { return .rdpid }
            guard noMandatoryPrefix else { return nil }
            return reg == 6 ? .rdrand : (reg == 7 ? .rdseed : nil)
        default:
            return nil
        }
    }
}

/// Reads instruction bytes, never past the 15-byte limit or the end of the input.
private struct ByteCursor {
    let bytes: [UInt8]
    var position = 0

    private func check() throws(DecodeError) {
        guard position < X86Decoder.maximumLength else { throw .tooLong }
        guard position < bytes.count else { throw .truncated }
    }

    func peek() throws(DecodeError) -> UInt8 {
        try check()
        return bytes[position]
    }

    mutating func next() throws(DecodeError) -> UInt8 {
        try check()
        position += 1
        return bytes[position - 1]
    }

    /// A little-endian value of `size` bytes (0, 1, 2, 3, 4 or 8), sign-extended from its top byte.
    mutating func signed(_ size: Int) throws(DecodeError) -> Int64 {
        guard size > 0 else { return 0 }
        var value: UInt64 = 0
        for index in 0..<size { value |= UInt64(try next()) << (8 * UInt64(index)) }
        let unused = UInt64(64 - 8 * size)
        return Int64(bitPattern: value << unused) >> Int64(unused)
    }
}
