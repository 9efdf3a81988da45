/// A small encoder for ACPI Machine Language, the byte code of the DSDT (ACPI 6.5 §20, "ACPI Machine
/// Language (AML) Specification"). Each function returns the bytes of one AML term; terms nest by passing
/// the inner terms' bytes to the outer one:
///
/// ```swift
/// Aml.scope("\\_SB_", [
///     Aml.device("COM1", [
///         Aml.name("_HID", Aml.eisaId("PNP0501")),
///         Aml.name("_UID", Aml.integer(0)),
///     ]),
/// ])
/// ```
///
/// is the ASL `Scope (\_SB) { Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, Zero) } }`.
/// Names and IDs are the VMM's own constants, so a malformed one is a programming error and traps.
public enum Aml {
    // MARK: Opcodes and prefixes (ACPI 6.5 §20.3, Table 20.2)

    static let zeroOp: UInt8 = 0x00
    static let oneOp: UInt8 = 0x01
    static let onesOp: UInt8 = 0xFF
    static let bytePrefix: UInt8 = 0x0A
    static let wordPrefix: UInt8 = 0x0B
    static let dwordPrefix: UInt8 = 0x0C
    static let stringPrefix: UInt8 = 0x0D
    static let qwordPrefix: UInt8 = 0x0E
    static let nameOp: UInt8 = 0x08
    static let scopeOp: UInt8 = 0x10
    static let bufferOp: UInt8 = 0x11
    static let packageOp: UInt8 = 0x12
    static let methodOp: UInt8 = 0x14
    static let returnOp: UInt8 = 0xA4
    static let extOpPrefix: UInt8 = 0x5B
    static let deviceOp: UInt8 = 0x82  // after ExtOpPrefix
    static let rootChar: UInt8 = 0x5C  // '\'
    static let parentPrefixChar: UInt8 = 0x5E  // '^'
    static let dualNamePrefix: UInt8 = 0x2E
    static let multiNamePrefix: UInt8 = 0x2F
    static let nullName: UInt8 = 0x00

    // MARK: Data objects (§20.2.3)

    /// An integer in its shortest encoding: ZeroOp, OneOp, OnesOp (all 64 bits set: the DSDT is
    /// revision 2, so integers are 64-bit), or ByteConst, WordConst, DWordConst, QWordConst.
    public static func integer(_ value: UInt64) -> [UInt8] {
        switch value {
        case 0: return [zeroOp]
        case 1: return [oneOp]
        case UInt64.max: return [onesOp]
        case ...0xFF: return [bytePrefix, UInt8(value)]
        case ...0xFFFF: return littleEndian(UInt16(value), prefix: wordPrefix)
        case ...0xFFFF_FFFF: return dwordConst(UInt32(value))
        default: return littleEndian(value, prefix: qwordPrefix)
        }
    }

    /// A DWordConst regardless of the value's size (an `EisaId` is always one).
    public static func dwordConst(_ value: UInt32) -> [UInt8] { littleEndian(value, prefix: dwordPrefix) }

    /// A String: StringPrefix, ASCII characters 0x01–0x7F, NUL.
    public static func string(_ text: String) -> [UInt8] {
        let ascii = Array(text.utf8)
        precondition(ascii.allSatisfy { (0x01...0x7F).contains($0) }, "AML strings are ASCII without NUL: \(text)")
        return [stringPrefix] + ascii + [0]
    }

    /// A Buffer: BufferOp, PkgLength, BufferSize (an integer), the bytes.
    public static func buffer(_ bytes: [UInt8]) -> [UInt8] {
        [bufferOp] + withPkgLength(integer(UInt64(bytes.count)) + bytes)
    }

    /// A Package of at most 255 elements: PackageOp, PkgLength, NumElements, the elements.
    public static func package(_ elements: [[UInt8]]) -> [UInt8] {
        precondition(elements.count <= 255, "a Package holds at most 255 elements (VarPackage is not needed here)")
        return [packageOp] + withPkgLength([UInt8(elements.count)] + elements.flatMap { $0 })
    }

    /// `EisaId ("PNP0A08")` (ACPI 6.5 §19.6.44): three upper-case letters and four hex digits compressed
    /// into a 32-bit integer, always encoded as a DWordConst.
    public static func eisaId(_ id: String) -> [UInt8] { dwordConst(eisaIdValue(id)) }

    /// The integer value of an EISA ID: each letter as 5 bits (`'A'` = 1), then the 16-bit product number,
    /// stored big-endian (so "PNP0A08" is 0x080AD041 read as a little-endian DWORD).
    public static func eisaIdValue(_ id: String) -> UInt32 {
        let c = Array(id.utf8)
        precondition(c.count == 7 && c[0..<3].allSatisfy { (0x41...0x5A).contains($0) }
                     && c[3...].allSatisfy { hexDigit($0) != nil }, "not an EISA ID: \(id)")
        let vendor = c[0..<3].reduce(UInt32(0)) { $0 << 5 | UInt32($1 - 0x40) }
        let product = c[3...].reduce(UInt32(0)) { $0 << 4 | UInt32(hexDigit($1)!) }
        return (vendor << 16 | product).byteSwapped
    }

    // MARK: Package length (§20.2.4)

    /// Encodes the PkgLength value `total`, which counts the PkgLength bytes themselves and what follows.
    /// One byte holds 0–63; otherwise bits 7–6 of the lead byte give the number of following bytes (1–3),
    /// bits 3–0 the low nibble, and each following byte the next 8 bits: up to 4095, 1048575, 2^28 − 1.
    public static func encodePkgLength(_ total: Int) -> [UInt8] {
        precondition((0...0x0FFF_FFFF).contains(total), "PkgLength \(total) does not fit in 28 bits")
        if total <= 0x3F { return [UInt8(total)] }
        let following = total <= 0xFFF ? 1 : total <= 0xF_FFFF ? 2 : 3
        var bytes = [UInt8(following << 6) | UInt8(total & 0x0F)]
        var rest = total >> 4
        for _ in 0..<following {
            bytes.append(UInt8(rest & 0xFF))
            rest >>= 8
        }
        return bytes
    }

    /// `content` preceded by its PkgLength. The length includes its own 1–4 bytes, so the encoding's size is
    /// chosen first: the smallest one whose range holds `content.count` plus itself.
    public static func withPkgLength(_ content: [UInt8]) -> [UInt8] {
        let n = content.count
        let lengthSize = n + 1 <= 0x3F ? 1 : n + 2 <= 0xFFF ? 2 : n + 3 <= 0xF_FFFF ? 3 : 4
        return encodePkgLength(n + lengthSize) + content
    }

    // MARK: Names (§20.2.2)

    /// A NameString: an optional root (`\`) or parent (`^`) prefix, then dot-separated NameSegs. Each
    /// segment is padded with `_` to 4 characters (`_SB` → `_SB_`); two segments take DualNamePrefix, three
    /// or more MultiNamePrefix and a count; no segment at all is NullName (`\` alone is the root).
    public static func nameString(_ path: String) -> [UInt8] {
        var rest = Substring(path)
        var bytes: [UInt8] = []
        if rest.first == "\\" {
            bytes.append(rootChar)
            rest = rest.dropFirst()
        } else {
            while rest.first == "^" {
                bytes.append(parentPrefixChar)
                rest = rest.dropFirst()
            }
        }
        let segments = rest.isEmpty ? [] : rest.split(separator: ".", omittingEmptySubsequences: false)
        switch segments.count {
        case 0: bytes.append(nullName)
        case 1: break
        case 2: bytes.append(dualNamePrefix)
        default:
            precondition(segments.count <= 255, "a name path has at most 255 segments")
            bytes += [multiNamePrefix, UInt8(segments.count)]
        }
        for segment in segments { bytes += nameSeg(segment) }
        return bytes
    }

    /// A NameSeg: a leading `A`–`Z` or `_`, then up to three of `A`–`Z`, `0`–`9`, `_`, padded with `_`.
    public static func nameSeg<S: StringProtocol>(_ segment: S) -> [UInt8] {
        let c = Array(segment.utf8)
        func isLead(_ x: UInt8) -> Bool { (0x41...0x5A).contains(x) || x == 0x5F }
        precondition((1...4).contains(c.count) && isLead(c[0]) && c.allSatisfy { isLead($0) || (0x30...0x39).contains($0) },
                     "not an ACPI NameSeg: \(segment)")
        return c + [UInt8](repeating: 0x5F, count: 4 - c.count)
    }

    // MARK: Named objects and statements (§20.2.5)

    /// `Name (path, object)`: NameOp, NameString, DataRefObject.
    public static func name(_ path: String, _ object: [UInt8]) -> [UInt8] {
        [nameOp] + nameString(path) + object
    }

    /// `Scope (path) { terms }`: ScopeOp, PkgLength, NameString, TermList.
    public static func scope(_ path: String, _ terms: [[UInt8]]) -> [UInt8] {
        [scopeOp] + withPkgLength(nameString(path) + terms.flatMap { $0 })
    }

    /// `Device (path) { terms }`: ExtOpPrefix DeviceOp, PkgLength, NameString, TermList.
    public static func device(_ path: String, _ terms: [[UInt8]]) -> [UInt8] {
        [extOpPrefix, deviceOp] + withPkgLength(nameString(path) + terms.flatMap { $0 })
    }

    /// `Method (path, arguments, Serialized|NotSerialized) { terms }`: MethodOp, PkgLength, NameString,
    /// MethodFlags (bits 0–2 the argument count, bit 3 serialized, bits 4–7 the sync level, 0 here), TermList.
    public static func method(_ path: String, arguments: Int = 0, serialized: Bool = false, _ terms: [[UInt8]]) -> [UInt8] {
        precondition((0...7).contains(arguments), "a method takes 0 to 7 arguments")
        let flags = UInt8(arguments) | (serialized ? 0x08 : 0)
        return [methodOp] + withPkgLength(nameString(path) + [flags] + terms.flatMap { $0 })
    }

    /// `Return (value)`: ReturnOp, ArgObject.
    public static func returnValue(_ value: [UInt8]) -> [UInt8] { [returnOp] + value }

    // MARK: Helpers

    static func littleEndian<T: FixedWidthInteger>(_ value: T, prefix: UInt8) -> [UInt8] {
        var bytes = [prefix]
        bytes.appendLittleEndian(value)
        return bytes
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        default: nil
        }
    }
}
