/// Building blocks shared by every ACPI table: little-endian fields, the 8-bit checksum, the system
/// description table header and the Generic Address Structure. Section numbers are those of the ACPI
/// Specification 6.5.

extension Array where Element == UInt8 {
    /// Appends `value` in little-endian byte order (ACPI 6.5 §5.2: all multi-byte fields are little-endian).
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    /// Overwrites `T.bitWidth / 8` bytes at `offset` with `value` in little-endian byte order.
    mutating func setLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        Swift.withUnsafeBytes(of: value.littleEndian) { raw in
            for (i, byte) in raw.enumerated() { self[offset + i] = byte }
        }
    }

    /// Appends the ASCII bytes of `text`, padded with `pad` or cut to exactly `count` bytes.
    mutating func appendAscii(_ text: String, count: Int, pad: UInt8 = 0x20) {
        let ascii = Array(text.utf8.prefix(count))
        append(contentsOf: ascii)
        append(contentsOf: [UInt8](repeating: pad, count: count - ascii.count))
    }
}

/// The ACPI checksum: the byte that makes `bytes` sum to zero modulo 256 (ACPI 6.5 §5.2.6, "Checksum").
func acpiChecksum<C: Collection>(_ bytes: C) -> UInt8 where C.Element == UInt8 {
    let sum = bytes.reduce(UInt8(0)) { $0 &+ $1 }
    return 0 &- sum
}

/// Who made a table: the OEM fields and creator fields of every header (ACPI 6.5 §5.2.6, Table 5.4).
public enum AcpiOem {
    /// OEM ID, 6 bytes.
    public static let id = "ACTVMM"
    /// OEM Table ID prefix: the 8-byte table id is this followed by the table's signature ("ACTVFACP").
    public static let tableIdPrefix = "ACTV"
    public static let revision: UInt32 = 1
    /// Creator ID ("the vendor ID of the utility that created the table") and its revision.
    public static let creatorId = "AVMM"
    public static let creatorRevision: UInt32 = 1
}

/// A System Description Table being built: the 36-byte header (ACPI 6.5 §5.2.6, Table 5.4) followed by
/// the table's own fields. `finish()` fills in the length and the checksum.
struct SdtBuilder {
    static let headerSize = 36
    static let lengthOffset = 4
    static let checksumOffset = 9

    private(set) var bytes: [UInt8] = []

    /// Starts a table: Signature, Length (filled in by `finish`), Revision, Checksum (ditto), OEMID,
    /// OEM Table ID, OEM Revision, Creator ID, Creator Revision.
    init(signature: String, revision: UInt8) {
        precondition(signature.utf8.count == 4, "ACPI signatures are 4 ASCII characters")
        bytes.appendAscii(signature, count: 4)
        bytes.appendLittleEndian(UInt32(0))
        bytes.append(revision)
        bytes.append(0)
        bytes.appendAscii(AcpiOem.id, count: 6)
        bytes.appendAscii(AcpiOem.tableIdPrefix + signature, count: 8)
        bytes.appendLittleEndian(AcpiOem.revision)
        bytes.appendAscii(AcpiOem.creatorId, count: 4)
        bytes.appendLittleEndian(AcpiOem.creatorRevision)
        assert(bytes.count == Self.headerSize)
    }

    mutating func append<T: FixedWidthInteger>(_ value: T) { bytes.appendLittleEndian(value) }
    mutating func append(bytes more: [UInt8]) { bytes.append(contentsOf: more) }
    mutating func append(_ address: GenericAddress) { bytes.append(contentsOf: address.bytes) }
    mutating func appendZeros(_ count: Int) { bytes.append(contentsOf: [UInt8](repeating: 0, count: count)) }
    var count: Int { bytes.count }

    /// Overwrites a field at `offset` from the start of the table (for tables laid out by fixed offsets).
    mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) { bytes.setLittleEndian(value, at: offset) }
    mutating func set(_ address: GenericAddress, at offset: Int) {
        bytes.replaceSubrange(offset..<(offset + GenericAddress.size), with: address.bytes)
    }
    mutating func setAscii(_ text: String, at offset: Int, count: Int) {
        var field: [UInt8] = []
        field.appendAscii(text, count: count)
        bytes.replaceSubrange(offset..<(offset + count), with: field)
    }

    /// Sets Length to the table's size and Checksum so that the whole table sums to zero.
    func finish() -> [UInt8] {
        var table = bytes
        table.setLittleEndian(UInt32(table.count), at: Self.lengthOffset)
        table[Self.checksumOffset] = acpiChecksum(table)
        return table
    }
}

/// The Generic Address Structure (ACPI 6.5 §5.2.3.2, Table 5.1): where a register lives and how to
/// access it. 12 bytes.
public struct GenericAddress: Equatable, Sendable {
    /// Address Space ID (ACPI 6.5 Table 5.1): 0 system memory, 1 system I/O.
    public enum Space: UInt8, Sendable { case systemMemory = 0, systemIO = 1 }
    /// Access Size: 0 undefined (legacy), 1 byte, 2 word, 3 dword, 4 qword.
    public enum AccessSize: UInt8, Sendable { case undefined = 0, byte = 1, word = 2, dword = 3, qword = 4 }

    public static let size = 12
    /// An all-zero GAS: "this register is not implemented".
    public static let none = GenericAddress(space: .systemMemory, bitWidth: 0, bitOffset: 0, accessSize: .undefined, address: 0)

    public let space: Space
    public let bitWidth: UInt8
    public let bitOffset: UInt8
    public let accessSize: AccessSize
    public let address: UInt64

    /// A one-byte register at I/O port `port`, accessed with byte accesses.
    public static func ioByte(_ port: UInt16) -> GenericAddress {
        GenericAddress(space: .systemIO, bitWidth: 8, bitOffset: 0, accessSize: .byte, address: UInt64(port))
    }

    public var bytes: [UInt8] {
        var b: [UInt8] = [space.rawValue, bitWidth, bitOffset, accessSize.rawValue]
        b.appendLittleEndian(address)
        return b
    }
}
