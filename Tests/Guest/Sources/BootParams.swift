// BootParams.swift: what the VMM tells us at boot, and the kernel-style command line.

/// The Linux x86 `boot_params` "zero page" whose address the VMM passes in RSI.
/// Only the command line is read from it so far.
struct BootParams {
    let address: UInt

    static let extCmdLinePtrOffset = 0x0C8   // u32: bits 32-63 of the command line address
    static let cmdLinePtrOffset = 0x228      // u32: bits 0-31 of the command line address
    static let commandLineLimit = 4096       // longest command line we look at

    /// Guest-physical address of the NUL-terminated command line; 0 if there is none.
    var commandLineAddress: UInt64 {
        guard let page = UnsafeRawPointer(bitPattern: address) else { return 0 }
        let low = page.load(fromByteOffset: Self.cmdLinePtrOffset, as: UInt32.self)
        let high = page.load(fromByteOffset: Self.extCmdLinePtrOffset, as: UInt32.self)
        return UInt64(high) << 32 | UInt64(low)
    }

    /// The command line's bytes without the terminating NUL (empty if there is none, or if it
    /// lies above 4 GiB, which our page tables do not map).
    var commandLine: UnsafeBufferPointer<UInt8> {
        let address = commandLineAddress
        guard address < 1 << 32, let start = UnsafePointer<UInt8>(bitPattern: UInt(address)) else {
            return UnsafeBufferPointer(start: nil, count: 0)
        }
        var length = 0
        while length < Self.commandLineLimit && start[length] != 0 { length += 1 }
        return UnsafeBufferPointer(start: start, count: length)
    }
}

extension UnsafeBufferPointer<UInt8> {
    /// Calls `body` with each non-empty piece of `self` between `separator` bytes.
    func forEachPiece(separatedBy separator: UInt8, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        var pieceStart = 0
        for index in 0...count where index == count || self[index] == separator {
            if index > pieceStart { body(UnsafeBufferPointer(rebasing: self[pieceStart..<index])) }
            pieceStart = index + 1
        }
    }

    /// Whether these bytes start with `prefix`.
    func hasPrefix(_ prefix: StaticString) -> Bool {
        prefix.withUTF8Buffer { prefix in
            prefix.count <= count && prefix.indices.allSatisfy { self[$0] == prefix[$0] }
        }
    }

    /// Whether these bytes are exactly `text`.
    func equals(_ text: StaticString) -> Bool {
        count == text.utf8CodeUnitCount && hasPrefix(text)
    }

    /// The value of the last `key=value` token in a space-separated command line, or nil.
    func commandLineValue(of key: StaticString) -> UnsafeBufferPointer<UInt8>? {
        let prefixLength = key.utf8CodeUnitCount + 1
        var value: UnsafeBufferPointer<UInt8>? = nil
        forEachPiece(separatedBy: UInt8(ascii: " ")) { token in
            if token.count >= prefixLength, token.hasPrefix(key), token[prefixLength - 1] == UInt8(ascii: "=") {
                value = UnsafeBufferPointer(rebasing: token[prefixLength...])
            }
        }
        return value
    }
}
