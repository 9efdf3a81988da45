@testable import ActorVmm

/// The x86-64 decoder (Sources/ActorVmm/Compat/X86Decoder.swift) reads guest-controlled bytes, so it must
/// never trap: any input decodes to an instruction of at most 15 bytes that is a prefix of the input, or to
/// an error. Swift Testing runs a seeded 200,000-input version of this on every `swift test`
/// (Tests/ActorVmmTests/X86DecoderFuzzTests.swift); this target is for longer, coverage-guided runs.
func decoderTarget(_ input: [UInt8]) {
    let size = input.count
    do {
        let decoded = try X86Decoder.decode(input)
        guard decoded.length >= 1 && decoded.length <= X86Decoder.maximumLength && decoded.length <= size else {
            finding("bad length \(decoded.length) for \(size) input bytes")
        }
        guard decoded.bytes == Array(input.prefix(decoded.length)) else { finding("bytes are not a prefix of the input") }
        if case .memory(let operand)? = decoded.rm {
            _ = operand.linearAddress(registers: GuestRegisters(), instructionEnd: UInt64.max, segmentBase: UInt64.max)
        }
    } catch .truncated {
        guard size < X86Decoder.maximumLength else { finding("truncated although 15 bytes were given") }
    } catch {
    }
}
