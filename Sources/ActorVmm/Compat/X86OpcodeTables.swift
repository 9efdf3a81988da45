/// The shape of each opcode in 64-bit mode: whether a ModRM byte follows and how many immediate bytes.
///
/// The tables are what an x86 length decoder needs and no more; they follow the opcode maps of the Intel
/// SDM, volume 2, appendix A (and AMD's APM volume 3, appendix A), with 64-bit-mode invalid opcodes marked.
/// One character per opcode, sixteen per row:
///
/// | char | meaning |
/// | --- | --- |
/// | `.` | no ModRM, no immediate |
/// | `m` | ModRM |
/// | `B` | ModRM + imm8 |
/// | `Z` | ModRM + imm16/32 (16 with a 66 prefix, else 32; sign-extended under REX.W) |
/// | `4` | ModRM + imm32 (only XOP map 10, which has no table of its own) |
/// | `b` | imm8 |
/// | `w` | imm16 |
/// | `z` | imm16/32, as for `Z` |
/// | `v` | imm16/32/64 (`mov r, imm`: 64 under REX.W) |
/// | `r` | rel16/32 (near call, jmp, jcc): 16 with a 66 prefix (and no REX.W), as AMD CPUs and objdump decode it; Intel CPUs ignore 66 here |
/// | `o` | moffs: an 8-byte address, 4 with a 67 prefix (`mov al/eax, [moffs]` and back) |
/// | `e` | imm16 + imm8 (`enter`) |
/// | `g` | group 3 byte form (`F6`): ModRM, + imm8 when ModRM.reg is 0 or 1 (`test`) |
/// | `G` | group 3 full form (`F7`): ModRM, + imm16/32 when ModRM.reg is 0 or 1 |
/// | `x` | invalid in 64-bit mode (#UD) |
/// | `p` | a prefix (never looked up as an opcode) |
/// | `s` | an escape taken apart before the look-up (`0F`, VEX `C4`/`C5`, EVEX `62`, `0F 38`, `0F 3A`) |
enum OpcodeShape: UInt8, Sendable {
    case none = 46         // "."
    case modrm = 109       // "m"
    case modrmImm8 = 66    // "B"
    case modrmImmZ = 90    // "Z"
    case modrmImm32 = 52   // "4": ModRM + imm32 (XOP map 10 only)
    case imm8 = 98         // "b"
    case imm16 = 119       // "w"
    case immZ = 122        // "z"
    case immV = 118        // "v"
    case rel32 = 114       // "r"
    case moffs = 111       // "o"
    case enter = 101       // "e"
    case group3Byte = 103  // "g"
    case group3Full = 71   // "G"
    case invalid = 120     // "x"
    case prefix = 112      // "p"
    case escape = 115      // "s"

    var hasModRM: Bool {
        switch self {
        case .modrm, .modrmImm8, .modrmImmZ, .modrmImm32, .group3Byte, .group3Full: true
        default: false
        }
    }
}

enum OpcodeTables {
    /// The one-byte map. Rows 0x00–0xF0.
    static let primary = parse([
        "mmmmbzxxmmmmbzxs",  // 00 add, or, (06/07/0E push/pop es/cs invalid), 0F escape
        "mmmmbzxxmmmmbzxx",  // 10 adc, sbb (push/pop ss/ds invalid)
        "mmmmbzpxmmmmbzpx",  // 20 and, sub; 26 es:, 2E cs:; daa/das invalid
        "mmmmbzpxmmmmbzpx",  // 30 xor, cmp; 36 ss:, 3E ds:; aaa/aas invalid
        "pppppppppppppppp",  // 40 REX
        "................",  // 50 push/pop r
        "xxsmppppzZbB....",  // 60 pusha/popa invalid, 62 EVEX, 63 movsxd, 64–67 prefixes, push/imul imm, ins/outs
        "bbbbbbbbbbbbbbbb",  // 70 jcc rel8
        "BZxBmmmmmmmmmmmm",  // 80 group 1 (82 invalid), test, xchg, mov, lea, mov sreg, pop (8F; XOP when reg≠0)
        "..........x.....",  // 90 xchg/nop, cbw, cwd, (9A callf invalid), fwait, pushf, popf, sahf, lahf
        "oooo....bz......",  // A0 mov moffs, movs, cmps, test imm, stos, lods, scas
        "bbbbbbbbvvvvvvvv",  // B0 mov r8, imm8; mov r, imm
        "BBw.ssBZe.w..bx.",  // C0 shifts imm8, ret imm16, ret, VEX C4/C5, mov imm, enter, leave, retf, int3, int, (into), iret
        "mmmmxxx.mmmmmmmm",  // D0 shifts 1/cl, (aam, aad, salc invalid), xlat, x87 escapes
        "bbbbbbbbrrxb....",  // E0 loop/jrcxz, in/out imm8, call/jmp rel32, (jmpf invalid), jmp rel8, in/out dx
        "p.pp..gG......mm",  // F0 lock, int1, repne, rep, hlt, cmc, group 3, clc…std, group 4/5
    ])

    /// The two-byte map (0F xx).
    static let map0F = parse([
        "mmmmx.....x.xm.B",  // 00 groups 6/7, lar, lsl, syscall, clts, sysret, invd, wbinvd, ud2, prefetch, femms, 3DNow! (suffix byte as imm8)
        "mmmmmmmmmmmmmmmm",  // 10 SSE moves, prefetch/hint nops, endbr
        "mmmmxxxxmmmmmmmm",  // 20 mov cr/dr (ModRM.mod ignored: always registers; 24–27 mov tr invalid), SSE
        "......x.sxsxxxxx",  // 30 wrmsr, rdtsc, rdmsr, rdpmc, sysenter, sysexit, getsec; 38/3A escapes
        "mmmmmmmmmmmmmmmm",  // 40 cmovcc
        "mmmmmmmmmmmmmmmm",  // 50 SSE
        "mmmmmmmmmmmmmmmm",  // 60 MMX/SSE
        "BBBBmmm.mmxxmmmm",  // 70 pshuf, groups 12–14 (imm8), pcmpeq, emms/vzeroupper, vmread/vmwrite
        "rrrrrrrrrrrrrrrr",  // 80 jcc rel32
        "mmmmmmmmmmmmmmmm",  // 90 setcc
        "...mBmxx...mBmmm",  // A0 push/pop fs, cpuid, bt, shld, push/pop gs, rsm, bts, shrd, group 15, imul
        "mmmmmmmmmmBmmmmm",  // B0 cmpxchg, lss, btr, lfs, lgs, movzx, popcnt, ud1, group 8 (imm8), btc, bsf, bsr, movsx
        "mmBmBBBm........",  // C0 xadd, cmpps (imm8), movnti, pinsrw, pextrw, shufps (imm8), group 9; bswap
        "mmmmmmmmmmmmmmmm",  // D0
        "mmmmmmmmmmmmmmmm",  // E0
        "mmmmmmmmmmmmmmmm",  // F0 (FF ud0 takes ModRM)
    ])

    /// The three-byte map 0F 38: every opcode takes ModRM and no immediate.
    static let map0F38 = [OpcodeShape](repeating: .modrm, count: 256)

    /// The three-byte map 0F 3A: every opcode takes ModRM and an imm8.
    static let map0F3A = [OpcodeShape](repeating: .modrmImm8, count: 256)

    private static func parse(_ rows: [String]) -> [OpcodeShape] {
        precondition(rows.count == 16, "an opcode table has 16 rows")
        var table: [OpcodeShape] = []
        table.reserveCapacity(256)
        for row in rows {
            precondition(row.utf8.count == 16, "an opcode table row has 16 entries: \(row)")
            for character in row.utf8 {
                guard let shape = OpcodeShape(rawValue: character) else { preconditionFailure("bad shape \(character)") }
                table.append(shape)
            }
        }
        return table
    }
}
