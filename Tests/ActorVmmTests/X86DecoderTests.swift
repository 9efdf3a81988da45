@testable import ActorVmm
import Testing

/// Bytes written as "0f 01 ca".
func bytes(_ hex: String) -> [UInt8] { hex.split(separator: " ").map { UInt8($0, radix: 16)! } }

@Suite struct X86DecoderTests {
    /// Real encodings: assembled with GNU as from a snippet of every form the decoder must size, and
    /// disassembled with `objdump -d -w` (binutils 2.42); the bytes and objdump's text are pasted here. Each
    /// is decoded with four junk bytes after it, so the decoder must stop at the right place.
    static let objdumpTable: [(String, String)] = [
        ("cc", "int3"),
        ("0f 01 ca", "clac"),
        ("0f 01 cb", "stac"),
        ("f3 48 0f b8 cb", "popcnt %rbx,%rcx"),
        ("f3 0f b8 cb", "popcnt %ebx,%ecx"),
        ("66 f3 0f b8 cb", "popcnt %bx,%cx"),
        ("f3 4c 0f b8 08", "popcnt (%rax),%r9"),
        ("f3 0f b8 44 24 10", "popcnt 0x10(%rsp),%eax"),
        ("f3 4c 0f b8 3d 78 56 34 12", "popcnt 0x12345678(%rip),%r15"),
        ("f3 4a 0f b8 14 e5 40 00 00 00", "popcnt 0x40(,%r12,8),%rdx"),
        ("66 f3 45 0f b8 45 00", "popcnt 0x0(%r13),%r8w"),
        ("9b", "fwait"),
        ("0f ae 17", "ldmxcsr (%rdi)"),
        ("0f ae 5d f8", "stmxcsr -0x8(%rbp)"),
        ("41 0f ae 94 24 00 10 00 00", "ldmxcsr 0x1000(%r12)"),
        ("c5 f8 ae 10", "vldmxcsr (%rax)"),
        ("c5 f8 ae 5c 24 04", "vstmxcsr 0x4(%rsp)"),
        ("48 0f c7 0e", "cmpxchg16b (%rsi)"),
        ("f0 48 0f c7 4c 4f 20", "lock cmpxchg16b 0x20(%rdi,%rcx,2)"),
        ("0f c7 0e", "cmpxchg8b (%rsi)"),
        ("0f ae 2f", "xrstor (%rdi)"),
        ("48 0f ae 2f", "xrstor64 (%rdi)"),
        ("0f c7 2f", "xsaves (%rdi)"),
        ("0f ae 04 24", "fxsave (%rsp)"),
        ("65 48 8b 04 25 28 00 00 00", "mov %gs:0x28,%rax"),
        ("64 8b 18", "mov %fs:(%rax),%ebx"),
        ("a0 88 77 66 55 44 33 22 11", "movabs 0x1122334455667788,%al"),
        ("48 a3 88 77 66 55 44 33 22 11", "movabs %rax,0x1122334455667788"),
        ("49 bb 88 77 66 55 44 33 22 11", "movabs $0x1122334455667788,%r11"),
        ("be 78 56 34 12", "mov $0x12345678,%esi"),
        ("66 be 34 12", "mov $0x1234,%si"),
        ("48 05 78 56 34 12", "add $0x12345678,%rax"),
        ("48 83 c0 12", "add $0x12,%rax"),
        ("66 81 03 34 12", "addw $0x1234,(%rbx)"),
        ("f6 00 01", "testb $0x1,(%rax)"),
        ("f7 40 08 00 01 00 00", "testl $0x100,0x8(%rax)"),
        ("f7 10", "notl (%rax)"),
        ("c8 10 00 01", "enter $0x10,$0x1"),
        ("c2 08 00", "ret $0x8"),
        ("e8 fb 00 00 00", "call 0x1c5"),
        ("eb 0e", "jmp 0xda"),
        ("0f 85 fa 0f 00 00", "jne 0x10cc"),
        ("74 00", "je 0xd4"),
        ("48 8d 0c 98", "lea (%rax,%rbx,4),%rcx"),
        ("48 8d 7c 24 7f", "lea 0x7f(%rsp),%rdi"),
        ("48 8d 44 15 80", "lea -0x80(%rbp,%rdx,1),%rax"),
        ("48 8d 1c 05 00 00 00 00", "lea 0x0(,%rax,1),%rbx"),
        ("48 8d 1c cd 44 33 22 11", "lea 0x11223344(,%rcx,8),%rbx"),
        ("49 8d 04 24", "lea (%r12),%rax"),
        ("4b 8d 44 75 00", "lea 0x0(%r13,%r14,2),%rax"),
        ("67 8d 48 10", "lea 0x10(%eax),%ecx"),
        ("f3 a4", "rep movsb %ds:(%rsi),%es:(%rdi)"),
        ("f3 48 ab", "rep stos %rax,%es:(%rdi)"),
        ("f0 ff 00", "lock incl (%rax)"),
        ("0f a2", "cpuid"),
        ("0f 32", "rdmsr"),
        ("0f 30", "wrmsr"),
        ("0f 0b", "ud2"),
        ("f4", "hlt"),
        ("66 0f 1f 04 00", "nopw (%rax,%rax,1)"),
        ("0f 1f 00", "nopl (%rax)"),
        ("66 2e 0f 1f 84 00 00 00 00 00", "cs nopw 0x0(%rax,%rax,1)"),
        ("66 0f 38 00 d1", "pshufb %xmm1,%xmm2"),
        ("66 0f 70 d1 1b", "pshufd $0x1b,%xmm1,%xmm2"),
        ("66 0f 3a 0f 18 04", "palignr $0x4,(%rax),%xmm3"),
        ("66 0f 3a 0b c1 01", "roundsd $0x1,%xmm1,%xmm0"),
        ("c5 ed fe d9", "vpaddd %ymm1,%ymm2,%ymm3"),
        ("c4 62 09 00 78 10", "vpshufb 0x10(%rax),%xmm14,%xmm15"),
        ("c4 e3 fd 00 d1 4e", "vpermq $0x4e,%ymm1,%ymm2"),
        ("c5 f8 77", "vzeroupper"),
        ("62 f1 6d 48 fe d9", "vpaddd %zmm1,%zmm2,%zmm3"),
        ("62 f1 6d 49 fe 58 01", "vpaddd 0x40(%rax),%zmm2,%zmm3{%k1}"),
        ("62 f3 6d 48 25 d9 ff", "vpternlogd $0xff,%zmm1,%zmm2,%zmm3"),
        ("f2 48 0f 38 f1 d8", "crc32 %rax,%rbx"),
        ("0f 38 f0 08", "movbe (%rax),%ecx"),
        ("c4 e2 e0 f2 c8", "andn %rax,%rbx,%rcx"),
        ("c4 e2 f9 f7 cb", "shlx %rax,%rbx,%rcx"),
        ("f3 48 0f bc d8", "tzcnt %rax,%rbx"),
        ("f3 0f bd d8", "lzcnt %eax,%ebx"),
        ("48 0f c7 f0", "rdrand %rax"),
        ("0f c7 f8", "rdseed %eax"),
        ("0f 01 d0", "xgetbv"),
        ("0f 01 f8", "swapgs"),
        ("0f 01 f9", "rdtscp"),
        ("0f 01 38", "invlpg (%rax)"),
        ("0f 01 10", "lgdt (%rax)"),
        ("0f ae 38", "clflush (%rax)"),
        ("66 0f ae 38", "clflushopt (%rax)"),
        ("0f ae f0", "mfence"),
        ("0f ae e8", "lfence"),
        ("0f ae f8", "sfence"),
        ("68 78 56 34 12", "push $0x12345678"),
        ("6a 12", "push $0x12"),
        ("66 68 34 12", "pushw $0x1234"),
        ("48 69 c8 78 56 34 12", "imul $0x12345678,%rax,%rcx"),
        ("6b d1 05", "imul $0x5,%ecx,%edx"),
        ("48 c1 e0 03", "shl $0x3,%rax"),
        ("48 d3 c0", "rol %cl,%rax"),
        ("48 0f ba e0 05", "bt $0x5,%rax"),
        ("48 0f a4 c3 04", "shld $0x4,%rax,%rbx"),
        ("e4 60", "in $0x60,%al"),
        ("e6 80", "out %al,$0x80"),
        ("cd 80", "int $0x80"),
        ("f1", "int1"),
        ("48 63 c0", "movslq %eax,%rax"),
        ("c6 f8 01", "xabort $0x1"),
        ("0f 05", "syscall"),
        ("48 0f 07", "sysretq"),
        ("48 cf", "iretq"),
        ("49 0f c9", "bswap %r9"),
        ("48 0f 45 d8", "cmovne %rax,%rbx"),
        ("0f 94 c0", "sete %al"),
        ("0f b6 08", "movzbl (%rax),%ecx"),
        ("49 90", "xchg %rax,%r8"),
        ("f3 90", "pause"),
        ("f3 0f 1e fa", "endbr64"),
        ("d9 e8", "fld1"),
        ("dd d9", "fstp %st(1)"),
        ("d9 38", "fnstcw (%rax)"),
        ("48 0f 03 c0", "lsl %rax,%rax"),  // Linux's GET_PERCPU_BASE (paranoid entry with FSGSBASE)
        ("0f 02 c3", "lar %ebx,%eax"),
        ("66 0f 03 c3", "lsl %bx,%ax"),
        ("0f 03 07", "lsl (%rdi),%eax"),
        ("48 0f 02 4c 24 08", "lar 0x8(%rsp),%rcx"),
        ("0f 00 e0", "verr %ax"),
        ("0f 00 2d 10 00 00 00", "verw 0x10(%rip)"),  // Linux's CLEAR_CPU_BUFFERS
        ("0f 00 28", "verw (%rax)"),
        ("f3 0f c7 f8", "rdpid %rax"),
        ("0f 00 c0", "sldt %eax"),
        ("0f 00 08", "str (%rax)"),
        ("0f 00 10", "lldt (%rax)"),
        ("0f 00 d8", "ltr %ax"),
    ]

    @Test func lengthsMatchObjdump() throws {
        for (hex, text) in Self.objdumpTable {
            let encoding = bytes(hex)
            let decoded = try X86Decoder.decode(encoding + [0x90, 0x0F, 0x0B, 0xCC])
            #expect(decoded.length == encoding.count, "\(hex) (\(text))")
            #expect(decoded.bytes == encoding, "\(hex) (\(text))")
            // Where objdump's mnemonic is one the decoder names, the names agree.
            let words = text.split(separator: " ").filter { $0 != "lock" && $0 != "rep" }
            if let first = words.first, let named = Mnemonic(rawValue: String(first)) {
                #expect(decoded.mnemonic == named, "\(hex) (\(text))")
            }
        }
        #expect(Self.objdumpTable.count > 100)
    }

    @Test func namesTheHandledInstructions() throws {
        #expect(try X86Decoder.decode(bytes("48 0f ae 2f")).mnemonic == .xrstor)  // xrstor64
        #expect(try X86Decoder.decode(bytes("0f c7 0e")).mnemonic == .cmpxchg8b)
        #expect(try X86Decoder.decode(bytes("48 0f c7 0e")).mnemonic == .cmpxchg16b)
        #expect(try X86Decoder.decode(bytes("0f b8 c0")).mnemonic == nil, "0F B8 without F3 is not popcnt")
        #expect(try X86Decoder.decode(bytes("66 0f ae 17")).mnemonic == nil, "ldmxcsr with 66 is another encoding")
        #expect(try X86Decoder.decode(bytes("0f ae d7")).mnemonic == nil, "ldmxcsr has no register form")
        #expect(try X86Decoder.decode(bytes("48 89 c3")).mnemonic == nil, "mov is decoded but not named")
        #expect(try X86Decoder.decode(bytes("9b d9 38")).length == 1, "fstcw is fwait + fnstcw")
        let lsl = try X86Decoder.decode(bytes("48 0f 03 c0"))
        #expect(lsl.mnemonic == .lsl && lsl.operandSize == 64 && lsl.reg == 0 && lsl.rm == .register(0))
        #expect(try X86Decoder.decode(bytes("66 0f 02 c3")).operandSize == 16)
        #expect(try X86Decoder.decode(bytes("f3 0f 03 c0")).mnemonic == nil, "lsl with F3 is not named")
        #expect(try X86Decoder.decode(bytes("0f 00 f0")).mnemonic == nil, "0F 00 /6 is undefined")
        #expect(try X86Decoder.decode(bytes("0f c7 f8")).mnemonic == .rdseed, "without F3 it is rdseed")
    }

    @Test func prefixesAndRex() throws {
        let popcnt = try X86Decoder.decode(bytes("66 f3 45 0f b8 45 00"))
        #expect(popcnt.prefixes.operandSizeOverride && popcnt.prefixes.rep && !popcnt.prefixes.repne)
        #expect(popcnt.prefixes.rex == 0x45 && popcnt.prefixes.rexR && popcnt.prefixes.rexB && !popcnt.prefixes.rexW)
        #expect(popcnt.operandSize == 16)
        #expect(popcnt.reg == 8)  // r8w
        #expect(popcnt.rm == .memory(memory(base: .r13)))

        // A REX followed by a legacy prefix is ignored: this is `add ax, ax`, not `add rax, rax`.
        let ignored = try X86Decoder.decode(bytes("48 66 01 c0"))
        #expect(ignored.prefixes.rex == nil && ignored.operandSize == 16)
        // The last REX before the opcode counts.
        #expect(try X86Decoder.decode(bytes("41 48 01 c0")).prefixes.rex == 0x48)
        // REX.W beats 66.
        #expect(try X86Decoder.decode(bytes("66 48 05 78 56 34 12")).operandSize == 64)
        let mov = try X86Decoder.decode(bytes("65 48 8b 04 25 28 00 00 00"))
        #expect(mov.prefixes.segment == .gs && mov.rm == .memory(memory(displacement: 0x28, segment: .gs)))
        let locked = try X86Decoder.decode(bytes("f0 48 0f c7 4c 4f 20"))
        #expect(locked.prefixes.lock && locked.mnemonic == .cmpxchg16b)
        #expect(locked.rm == .memory(memory(base: .rdi, index: .rcx, scale: 2, displacement: 0x20)))
        // Many prefixes are fine up to 15 bytes in all.
        #expect(try X86Decoder.decode(Array(repeating: 0x66, count: 14) + [0x90]).length == 15)
    }

    @Test func modrmAndSibForms() throws {
        func rm(_ hex: String) throws -> RmOperand? { try X86Decoder.decode(bytes(hex)).rm }
        #expect(try rm("48 8d 0c 98") == .memory(memory(base: .rax, index: .rbx, scale: 4)))
        #expect(try rm("48 8d 7c 24 7f") == .memory(memory(base: .rsp, displacement: 0x7F, segment: .ss)))
        #expect(try rm("48 8d 44 15 80") == .memory(memory(base: .rbp, index: .rdx, displacement: -0x80, segment: .ss)))
        // SIB with base 101 and mod 00: no base, disp32.
        #expect(try rm("48 8d 1c 05 00 00 00 00") == .memory(memory(index: .rax)))
        #expect(try rm("48 8d 1c cd 44 33 22 11") == .memory(memory(index: .rcx, scale: 8, displacement: 0x11223344)))
        // SIB index 100 without REX.X: no index; r12 as a base always needs a SIB.
        #expect(try rm("49 8d 04 24") == .memory(memory(base: .r12)))
        // Index 100 with REX.X is r12.
        #expect(try rm("4a 8d 04 20") == .memory(memory(base: .rax, index: .r12)))
        // r13 as a base with mod 00 needs a disp8 (mod 01) ...
        #expect(try rm("4b 8d 44 75 00") == .memory(memory(base: .r13, index: .r14, scale: 2)))
        // ... because rm 101 with mod 00 is RIP-relative, REX.B or not.
        let rip = try X86Decoder.decode(bytes("41 8b 05 f0 ff ff ff"))
        #expect(rip.rm == .memory(memory(displacement: -16, ripRelative: true)))
        #expect(try rm("8b 04 25 00 10 00 00") == .memory(memory(displacement: 0x1000)), "absolute disp32 through SIB")
        #expect(try rm("48 01 c3") == .register(3))
        #expect(try rm("4d 01 c3") == .register(11))
        let disp32 = try X86Decoder.decode(bytes("41 0f ae 94 24 00 10 00 00"))
        #expect(disp32.rm == .memory(memory(base: .r12, displacement: 0x1000)) && disp32.length == 9)
        let address32 = try X86Decoder.decode(bytes("67 8d 48 10"))
        guard case .memory(let operand) = address32.rm else { Issue.record("no memory operand"); return }
        #expect(operand.addressSize == 32)
    }

    @Test func effectiveAddresses() throws {
        var registers = GuestRegisters()
        registers[.rax] = 0x1000; registers[.rcx] = 3; registers[.rsp] = 0x8000
        let sib = memory(base: .rax, index: .rcx, scale: 8, displacement: -8)
        #expect(sib.linearAddress(registers: registers, instructionEnd: 0, segmentBase: 0) == 0x1010)
        let rip = memory(displacement: -16, ripRelative: true)
        #expect(rip.linearAddress(registers: registers, instructionEnd: 0x2007, segmentBase: 0) == 0x1FF7)
        let gs = memory(displacement: 0x28, segment: .gs)
        #expect(gs.linearAddress(registers: registers, instructionEnd: 0, segmentBase: 0xFFFF_8880_0000_0000) == 0xFFFF_8880_0000_0028)
        var wrap = memory(base: .rax, displacement: -0x2000)
        wrap.addressSize = 32
        #expect(wrap.linearAddress(registers: registers, instructionEnd: 0, segmentBase: 0) == 0xFFFF_F000)
        // The RIP-relative operand of a real instruction: popcnt 0x12345678(%rip),%r15 at 0x100.
        let popcnt = try X86Decoder.decode(bytes("f3 4c 0f b8 3d 78 56 34 12"))
        guard case .memory(let operand) = popcnt.rm else { Issue.record("no memory operand"); return }
        #expect(operand.linearAddress(registers: registers, instructionEnd: 0x100 + 9, segmentBase: 0) == 0x1234_5781)
    }

    @Test func immediates() throws {
        func immediate(_ hex: String) throws -> (Int64, Int) {
            let decoded = try X86Decoder.decode(bytes(hex))
            return (decoded.immediate, decoded.immediateSize)
        }
        #expect(try immediate("48 83 c0 f0") == (-16, 1))
        #expect(try immediate("48 05 78 56 34 12") == (0x12345678, 4))
        #expect(try immediate("66 81 03 34 12") == (0x1234, 2))
        #expect(try immediate("49 bb 88 77 66 55 44 33 22 11") == (0x1122334455667788, 8))
        #expect(try immediate("a0 88 77 66 55 44 33 22 11") == (0x1122334455667788, 8))
        #expect(try immediate("67 a0 88 77 66 55") == (0x55667788, 4), "moffs is 4 bytes with 67")
        #expect(try immediate("f6 00 01") == (1, 1), "test Eb, Ib")
        #expect(try immediate("f6 10") == (0, 0), "not Eb has no immediate")
        #expect(try immediate("f7 40 08 00 01 00 00") == (0x100, 4))
        #expect(try immediate("e8 fb ff ff ff") == (-5, 4))
    }

    @Test func lengthRulesBeyondTheTables() throws {
        // AMD XOP (from libcrypto): map 8 has an imm8, map 9 none, map 10 an imm32.
        #expect(try X86Decoder.decode(bytes("8f e8 78 c2 c0 07")).length == 6)
        #expect(try X86Decoder.decode(bytes("8f e9 78 c1 c0")).length == 5)
        #expect(try X86Decoder.decode(bytes("8f ea 78 10 c0 01 02 00 00")).length == 9)
        // 3DNow!: ModRM, then the opcode as a suffix byte.
        #expect(try X86Decoder.decode(bytes("0f 0f 54 1a f2 b7")).length == 6)
        // mov to/from CR/DR ignores ModRM.mod: no displacement follows.
        let movDr = try X86Decoder.decode(bytes("0f 23 87 00 00 00 00"))
        #expect(movDr.length == 3 && movDr.rm == .register(7))
        // A 66 prefix makes near branches rel16 (AMD, objdump); REX.W restores rel32.
        #expect(try X86Decoder.decode(bytes("66 e9 53 cc 00 00")).length == 4)
        #expect(try X86Decoder.decode(bytes("66 48 e8 00 00 00 00")).length == 7)
        #expect(try X86Decoder.decode(bytes("66 0f 84 00 00 00 00")).length == 5)
    }

    @Test func vexAndEvex() throws {
        let vldmxcsr = try X86Decoder.decode(bytes("c5 f8 ae 10"))
        #expect(vldmxcsr.encoding == .vex(vvvv: 0, l: false, w: false, pp: 0) && vldmxcsr.mnemonic == .vldmxcsr)
        let vpshufb = try X86Decoder.decode(bytes("c4 62 09 00 78 10"))
        #expect(vpshufb.map == .map0F38 && vpshufb.reg == 15 && vpshufb.encoding == .vex(vvvv: 14, l: false, w: false, pp: 1))
        #expect(try X86Decoder.decode(bytes("c4 e3 fd 00 d1 4e")).immediateSize == 1)
        let evex = try X86Decoder.decode(bytes("62 f1 6d 49 fe 58 01"))
        #expect(evex.encoding == .evex && evex.length == 7 && evex.rm == nil)
        #expect(try X86Decoder.decode(bytes("62 f5 7c 48 58 c1")).map == .evexOnly(5), "AVX512-FP16 vaddph")
    }

    @Test(arguments: [
        "06", "07", "0e", "16", "17", "1e", "1f", "27", "2f", "37", "3f", "60", "61", "82 c0 01", "9a", "ce",
        "d4 0a", "d5 0a", "d6", "ea", "0f 04", "0f 0a", "0f 0c", "0f 24 c0", "0f 36", "0f 39", "0f 3b", "0f 7a",
        "0f a6", "0f a7", "66 c5 f8 77", "f3 c4 e2 79 00 c0", "48 c5 f8 77", "f0 62 f1 6d 48 fe d9",
        "c4 e0 79 00 c0", "c5 f8 80 00 00 00 00", "66 8f e8 78 c2 c0 07",
    ])
    func invalidOpcodes(hex: String) {
        #expect(throws: DecodeError.invalidOpcode) { try X86Decoder.decode(bytes(hex) + [0, 0, 0, 0, 0, 0, 0, 0]) }
    }

    @Test func unsupportedEncodings() {
        #expect(throws: DecodeError.unsupportedEncoding("XOP map 3")) { try X86Decoder.decode(bytes("8f e3 78 c1 c0")) }
        #expect(throws: DecodeError.unsupportedEncoding("EVEX map 4")) { try X86Decoder.decode(bytes("62 f4 7c 08 00 c0")) }
        #expect(throws: Never.self) { try X86Decoder.decode(bytes("8f c0")) }  // pop rax: 8F /0
    }

    @Test(arguments: ["", "0f", "48", "f3 48 0f b8", "0f 38", "e8 00 00", "c4 e2", "62 f1 6d", "8b 04", "8b 44 24",
                      "48 8b 05 00 00 00", "f6 00", "66 66"])
    func truncatedInput(hex: String) {
        #expect(throws: DecodeError.truncated) { try X86Decoder.decode(hex.isEmpty ? [] : bytes(hex)) }
    }

    @Test func tooLong() {
        #expect(throws: DecodeError.tooLong) { try X86Decoder.decode(Array(repeating: 0x66, count: 15) + [0x90]) }
        // 11 prefixes + a 5-byte instruction = 16 bytes.
        #expect(throws: DecodeError.tooLong) { try X86Decoder.decode(Array(repeating: 0x2e, count: 11) + bytes("05 78 56 34 12")) }
        #expect(throws: Never.self) { try X86Decoder.decode(Array(repeating: 0x2e, count: 10) + bytes("05 78 56 34 12")) }
    }
}

/// A memory operand with the decoder's defaults filled in.
func memory(base: Gpr? = nil, index: Gpr? = nil, scale: UInt8 = 1, displacement: Int64 = 0,
            ripRelative: Bool = false, segment: SegmentRegister = .ds) -> MemoryOperand {
    var operand = MemoryOperand()
    operand.base = base; operand.index = index; operand.scale = scale; operand.displacement = displacement
    operand.ripRelative = ripRelative; operand.segment = segment
    return operand
}
