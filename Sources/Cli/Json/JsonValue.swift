/// A JSON value (RFC 8259), as the API reads and writes it. No Foundation: ``JsonParser`` reads one,
/// ``serialized()`` writes one.
///
/// Numbers keep their literal text (already checked against the JSON grammar), so integers of any size stay
/// exact until a reader asks for one in a given range. Objects keep their members in document order; the
/// parser rejects duplicate keys, so a key names at most one member.
enum JsonValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JsonValue])
    case object([JsonMember])

    /// An integer number.
    static func int<T: BinaryInteger>(_ value: T) -> JsonValue { .number(String(value)) }

    /// An object from key/value pairs, in order.
    static func object(_ pairs: KeyValuePairs<String, JsonValue>) -> JsonValue {
        .object(pairs.map { JsonMember(key: $0.key, value: $0.value) })
    }

    /// The member named `key` of an object; nil for other values or a missing key.
    subscript(key: String) -> JsonValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// The value's JSON type, for error messages ("expected an integer, got a string").
    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// The value as an integer if it is an integer literal that fits `T` ("3" yes; "3.0", "3e0" no).
    func integer<T: FixedWidthInteger>(as _: T.Type = T.self) -> T? {
        guard case .number(let text) = self else { return nil }
        return T(text)
    }
}

/// One member of a JSON object.
struct JsonMember: Equatable, Sendable {
    let key: String
    let value: JsonValue
}

extension JsonValue {
    /// Compact JSON text (no insignificant whitespace), UTF-8.
    func serialized() -> String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private func write(to out: inout [UInt8]) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let value): out += Array((value ? "true" : "false").utf8)
        case .number(let text): out += Array(text.utf8)
        case .string(let text): Self.writeString(text, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                element.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (index, member) in members.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                member.value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// A string literal: `"` and `\` escaped, control characters as `\n`-style or `\u00XX` escapes,
    /// everything else as UTF-8.
    private static func writeString(_ text: String, to out: inout [UInt8]) {
        let hexDigits = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x00..<0x20, 0x7F:
                out += Array("\\u00".utf8)
                out += [hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
