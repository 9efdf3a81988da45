// Text.swift: writing text without String. Embedded Swift has String, but formatting numbers
// with it pulls in heap allocation and Unicode tables; bytes are all this guest needs.

/// Something text can be written to, one byte at a time: the serial port, or a LineBuffer.
protocol TextSink {
    mutating func write(byte: UInt8)
}

extension TextSink {
    /// Writes a string literal (ASCII/UTF-8 bytes, as written in the source).
    mutating func write(_ text: StaticString) {
        text.withUTF8Buffer { bytes in
            for byte in bytes { write(byte: byte) }
        }
    }

    /// Writes raw bytes, e.g. a piece of the command line.
    mutating func write(bytes: UnsafeBufferPointer<UInt8>) {
        for byte in bytes { write(byte: byte) }
    }

    /// Writes an integer in decimal: `-12`, `0`, `10000`.
    mutating func write(decimal value: some BinaryInteger) {
        if value < 0 { write(byte: UInt8(ascii: "-")) }
        writeDigits(UInt64(value.magnitude))
    }

    private mutating func writeDigits(_ value: UInt64) {
        if value >= 10 { writeDigits(value / 10) }
        write(byte: UInt8(ascii: "0") + UInt8(value % 10))
    }

    /// Writes the low `digits` hex digits of `value`, zero-padded, lower case, no `0x`:
    /// `write(hex: 0x3, digits: 2)` gives `03`.
    mutating func write(hex value: some BinaryInteger, digits: Int) {
        let bits = UInt64(truncatingIfNeeded: value)
        var shift = digits * 4
        while shift > 0 {
            shift -= 4
            let nibble = UInt8(truncatingIfNeeded: (bits >> UInt64(shift)) & 0xF)
            write(byte: nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10)
        }
    }
}

extension TextSink {
    /// Writes `0x` and the value in hex without leading zeros: `0x0`, `0xfee00000`.
    mutating func write(hex value: some BinaryInteger) {
        let bits = UInt64(truncatingIfNeeded: value)
        var digits = 1
        while digits < 16 && bits >> UInt64(digits * 4) != 0 { digits += 1 }
        write("0x")
        write(hex: bits, digits: digits)
    }
}

/// A line of text assembled in place (fixed capacity, no heap), e.g. the detail of a test
/// result, which is only printed once the test knows whether it passed. Bytes beyond the
/// capacity (the size of Linux's x86 command line buffer) are dropped.
struct LineBuffer: TextSink {
    private var storage = InlineArray<2048, UInt8>(repeating: 0)
    private(set) var count = 0

    mutating func write(byte: UInt8) {
        guard count < storage.count else { return }
        storage[count] = byte
        count += 1
    }

    /// Copies the line's bytes to `sink`.
    func write(to sink: inout some TextSink) {
        for index in 0..<count { sink.write(byte: storage[index]) }
    }
}
