@testable import ActorVmm
import Glibc
import Testing

/// SplitMix64: a tiny seeded generator, so a failing input can be reproduced from the seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The decoder takes guest-controlled bytes: it must return an instruction or an error for anything, never
/// trap, never read past its input or claim more than 15 bytes. (Tests/Fuzz/ has a libFuzzer harness for
/// longer runs.)
@Suite struct X86DecoderFuzzTests {
    /// Checks one input; returns whether it decoded.
    @discardableResult
    static func check(_ input: [UInt8]) -> Bool {
        do {
            let decoded = try X86Decoder.decode(input)
            #expect(decoded.length >= 1 && decoded.length <= X86Decoder.maximumLength && decoded.length <= input.count)
            #expect(decoded.bytes == Array(input.prefix(decoded.length)))
            return true
        } catch .truncated {
            // Only if the input is shorter than the limit: a 15-byte input either decodes or is too long/invalid.
            #expect(input.count < X86Decoder.maximumLength)
        } catch {
        }
        return false
    }

    @Test func randomBytesNeverCrashTheDecoder() {
        var generator = SplitMix64(seed: 0xAC70_4F4D)
        var buffer = [UInt8](repeating: 0, count: 16)
        var decoded = 0
        let runs = 200_000
        for run in 0..<runs {
            let length = Int(generator.next() % 17)  // 0…16 bytes
            var word = generator.next(), other = generator.next()
            for index in 0..<16 {
                buffer[index] = UInt8(truncatingIfNeeded: index < 8 ? word : other)
                if index < 8 { word >>= 8 } else { other >>= 8 }
            }
            // Bias a quarter of the inputs towards prefixes and escapes, where the interesting paths are.
            if run % 4 == 0 {
                let interesting: [UInt8] = [0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x65, 0x48, 0x4F, 0x0F, 0x38, 0x3A, 0xC4, 0xC5, 0x62, 0x8F]
                for index in 0..<min(length, 4) { buffer[index] = interesting[Int(generator.next() % UInt64(interesting.count))] }
            }
            if Self.check(Array(buffer.prefix(length))) { decoded += 1 }
        }
        #expect(decoded > runs / 4, "most random bytes are some instruction")
    }

    @Test func everyPrefixOfARealEncodingIsTruncatedOrShorter() {
        for (hex, _) in X86DecoderTests.objdumpTable {
            let encoding = bytes(hex)
            for cut in 0..<encoding.count {
                let prefix = Array(encoding.prefix(cut))
                if let decoded = try? X86Decoder.decode(prefix) {
                    Issue.record("\(hex) cut to \(cut) bytes decoded as \(decoded.length) bytes")
                }
            }
        }
    }
}

/// A development-time check against a large disassembly: set ACTORVMM_DECODER_CORPUS to a file of
/// instructions as objdump prints their bytes, one per line ("f0 48 0f c7 4d 20"), e.g.
/// `objdump -d -w vmlinux | awk -F'\t' 'NF>=3 && $3 !~ /bad/ {print $2}'` (drop lines starting with 9b:
/// objdump prints fwait and the x87 instruction after it as one). Every line must decode to its length.
@Suite(.enabled(if: getenv("ACTORVMM_DECODER_CORPUS") != nil, "set ACTORVMM_DECODER_CORPUS to run"))
struct X86DecoderCorpusTests {
    @Test func lengthsAgreeWithTheCorpus() throws {
        let path = String(cString: getenv("ACTORVMM_DECODER_CORPUS")!)
        guard let file = fopen(path, "r") else { Issue.record("cannot open \(path)"); return }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        var checked = 0, mismatches: [String] = []
        while getline(&line, &capacity, file) > 0 {
            let text = String(cString: line!).split(separator: "\n").first.map(String.init) ?? ""
            let encoding = text.split(separator: " ").compactMap { UInt8($0, radix: 16) }
            guard !encoding.isEmpty else { continue }
            checked += 1
            let decoded = try? X86Decoder.decode(encoding + [0x90, 0x90, 0x90, 0x90])
            if decoded?.length != encoding.count, mismatches.count < 50 {
                mismatches.append("\(text) -> \(decoded.map { "\($0.length)" } ?? "error")")
            }
        }
        free(line)
        #expect(mismatches.isEmpty, "\(checked) checked; \(mismatches.joined(separator: "; "))")
    }
}
