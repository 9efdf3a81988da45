import CKvm

/// Why a snapshot (or a migration stream) cannot be read or written: one line naming what is wrong.
public enum SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input does not start with the snapshot magic.
    case notASnapshot(String)
    /// The format version is one this build does not read.
    case unsupportedVersion(found: UInt32, expected: UInt32)
    /// The input ends inside `what`.
    case truncated(String)
    /// The checksum of a section does not match its bytes.
    case checksumMismatch(String)
    /// A value does not fit what it describes (`what`: the field and why).
    case invalid(String)
    /// A section the snapshot needs is absent.
    case missing(String)
    /// A host failure reading or writing `path` (or a socket).
    case io(String)
    /// The snapshot was taken of a different machine (memory layout, vCPUs, devices).
    case mismatch(String)

    public var description: String {
        switch self {
        case .notASnapshot(let what): return "\(what) is not an ActorVMM snapshot (bad magic)"
        case .unsupportedVersion(let found, let expected):
            return "snapshot format version \(found) is not supported (this build reads version \(expected))"
        case .truncated(let what): return "snapshot truncated: \(what)"
        case .checksumMismatch(let what): return "snapshot corrupted: checksum mismatch in \(what)"
        case .invalid(let what): return "snapshot invalid: \(what)"
        case .missing(let what): return "snapshot incomplete: no \(what)"
        case .io(let what): return what
        case .mismatch(let what): return "snapshot does not match this VM: \(what)"
        }
    }
}

/// Appends little-endian values to a byte buffer: the writer half of the snapshot format.
public struct SnapshotEncoder: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func u16(_ value: UInt16) { append(value) }
    public mutating func u32(_ value: UInt32) { append(value) }
    public mutating func u64(_ value: UInt64) { append(value) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    /// A length-prefixed (u32) byte string.
    public mutating func blob(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes += value
    }

    /// A length-prefixed UTF-8 string.
    public mutating func string(_ value: String) { blob(Array(value.utf8)) }

    /// Raw bytes, no length (for fixed-size fields the reader knows the size of).
    public mutating func raw(_ value: [UInt8]) { bytes += value }

    private mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }
}

/// Reads what ``SnapshotEncoder`` wrote, checking every length against what is left: a short or garbled
/// input is a ``SnapshotError`` naming `context` (the section being read), never a trap.
public struct SnapshotDecoder: Sendable {
    let bytes: [UInt8]
    public private(set) var offset = 0
    /// What is being read, for error messages ("vcpu0", "device 'disk0'").
    public var context: String

    public init(_ bytes: [UInt8], context: String) {
        self.bytes = bytes
        self.context = context
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset == bytes.count }

    public mutating func u8() throws(SnapshotError) -> UInt8 { try take(1).first! }
    public mutating func u16() throws(SnapshotError) -> UInt16 { try integer() }
    public mutating func u32() throws(SnapshotError) -> UInt32 { try integer() }
    public mutating func u64() throws(SnapshotError) -> UInt64 { try integer() }

    public mutating func bool() throws(SnapshotError) -> Bool {
        let value = try u8()
        guard value <= 1 else { throw .invalid("\(context): boolean byte \(value) at offset \(offset - 1)") }
        return value == 1
    }

    /// A length-prefixed byte string of at most `limit` bytes.
    public mutating func blob(limit: Int = 1 << 30) throws(SnapshotError) -> [UInt8] {
        let count = Int(try u32())
        guard count <= limit else { throw .invalid("\(context): field of \(count) bytes (at most \(limit))") }
        return Array(try take(count))
    }

    public mutating func string(limit: Int = 4096) throws(SnapshotError) -> String {
        String(decoding: try blob(limit: limit), as: UTF8.self)
    }

    /// `count` raw bytes.
    public mutating func raw(_ count: Int) throws(SnapshotError) -> [UInt8] { Array(try take(count)) }

    /// Fails unless everything was read (trailing bytes mean the writer and reader disagree).
    public func finish() throws(SnapshotError) {
        guard isAtEnd else { throw .invalid("\(context): \(remaining) unexpected trailing bytes") }
    }

    private mutating func integer<T: FixedWidthInteger>() throws(SnapshotError) -> T {
        let slice = try take(MemoryLayout<T>.size)
        var value: T = 0
        for (i, byte) in slice.enumerated() { value |= T(byte) << (8 * i) }
        return value
    }

    private mutating func take(_ count: Int) throws(SnapshotError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw .truncated("\(context): needed \(count) bytes at offset \(offset), \(remaining) left")
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`), for section and migration frame checksums; computed
/// by the C shim (`ckvm_crc32`, slice-by-8), which a debug build runs about 100 times faster than Swift.
public enum Crc32 {
    /// The checksum of `bytes`, continuing from `crc` (0 to start).
    public static func checksum(_ bytes: some Sequence<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withContiguousStorageIfAvailable { checksum(UnsafeRawBufferPointer($0), continuing: crc) }
            ?? Array(bytes).withUnsafeBytes { checksum($0, continuing: crc) }
    }

    /// The checksum of the bytes of `buffer`.
    public static func checksum(_ buffer: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        ckvm_crc32(crc, buffer.baseAddress, buffer.count)
    }
}
