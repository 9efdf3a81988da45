/// Why a document is not acceptable JSON: the byte offset and what was wrong there.
struct JsonParseError: Error, Equatable, Sendable, CustomStringConvertible {
    let offset: Int
    let reason: String
    var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// A strict RFC 8259 parser for documents from API clients, who may be hostile.
///
/// Everything the grammar forbids is an error (trailing commas, comments, single quotes, leading zeros,
/// control characters in strings, lone surrogates, invalid UTF-8, data after the value). Beyond the grammar
/// it rejects duplicate object keys, nesting deeper than ``maxDepth`` and number literals longer than
/// ``maxNumberLength``, so no input can make it recurse without bound or build an unbounded value from a
/// bounded one. The input size itself is bounded by the HTTP layer.
struct JsonParser {
    static let defaultMaxDepth = 32
    static let maxNumberLength = 64

    private let bytes: [UInt8]
    private let maxDepth: Int
    private var index = 0

    /// Parses `bytes` as one JSON document.
    static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JsonParseError) -> JsonValue {
        var parser = JsonParser(bytes: bytes, maxDepth: maxDepth)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.error("unexpected data after the JSON value") }
        return value
    }

    private init(bytes: [UInt8], maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    private func error(_ reason: String, at offset: Int? = nil) -> JsonParseError {
        JsonParseError(offset: offset ?? index, reason: reason)
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
    }

    private mutating func parseValue(depth: Int) throws(JsonParseError) -> JsonValue {
        guard let byte = current else { throw error("expected a value, found the end of the input") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error("expected a value, found \(describe(byte))")
        }
    }

    private mutating func expectLiteral(_ literal: String) throws(JsonParseError) {
        let start = index
        for expected in literal.utf8 {
            guard current == expected else { throw error("invalid literal (expected \(literal))", at: start) }
            index += 1
        }
    }

    private mutating func parseObject(depth: Int) throws(JsonParseError) -> JsonValue {
        guard depth <= maxDepth else { throw error("nesting deeper than \(maxDepth) levels") }
        index += 1  // {
        var members: [JsonMember] = []
        var keys: Set<String> = []
        skipWhitespace()
        if current == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyOffset = index
            let key = try parseString()
            guard keys.insert(key).inserted else { throw error("duplicate key \"\(key)\"", at: keyOffset) }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':' after an object key") }
            index += 1
            skipWhitespace()
            members.append(JsonMember(key: key, value: try parseValue(depth: depth)))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"): index += 1; return .object(members)
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws(JsonParseError) -> JsonValue {
        guard depth <= maxDepth else { throw error("nesting deeper than \(maxDepth) levels") }
        index += 1  // [
        var elements: [JsonValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { index += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"): index += 1; return .array(elements)
            default: throw error("expected ',' or ']' in an array")
            }
        }
    }

    /// A string literal; `index` is at the opening quote. The decoded bytes must be valid UTF-8.
    private mutating func parseString() throws(JsonParseError) -> String {
        let start = index
        index += 1
        var out: [UInt8] = []
        while true {
            guard let byte = current else { throw error("unterminated string", at: start) }
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard let text = String(validating: out, as: UTF8.self) else {
                    throw error("string is not valid UTF-8", at: start)
                }
                return text
            case UInt8(ascii: "\\"):
                try parseEscape(into: &out)
            case 0x00..<0x20:
                throw error("control character \(describe(byte)) in a string (escape it)", at: index - 1)
            default:
                out.append(byte)
            }
        }
    }

    private mutating func parseEscape(into out: inout [UInt8]) throws(JsonParseError) {
        guard let byte = current else { throw error("unterminated escape") }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(byte)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            let escapeStart = index - 2
            var scalar = UInt32(try parseHex4())
            if (0xD800..<0xDC00).contains(scalar) {  // a high surrogate must be followed by a low one
                guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                    throw error("unpaired surrogate \\u\(String(scalar, radix: 16))", at: escapeStart)
                }
                index += 2
                let low = UInt32(try parseHex4())
                guard (0xDC00..<0xE000).contains(low) else {
                    throw error("unpaired surrogate \\u\(String(scalar, radix: 16))", at: escapeStart)
                }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(scalar) {
                throw error("unpaired surrogate \\u\(String(scalar, radix: 16))", at: escapeStart)
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape", at: escapeStart) }
            out += Array(String(Character(unicode)).utf8)
        default:
            throw error("invalid escape \\\(describe(byte))", at: index - 2)
        }
    }

    private mutating func parseHex4() throws(JsonParseError) -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard let byte = current else { throw error("unterminated \\u escape") }
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("expected a hex digit in a \\u escape")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, returned as its literal text.
    private mutating func parseNumber() throws(JsonParseError) -> String {
        let start = index
        func digits(_ parser: inout JsonParser) -> Int {
            var count = 0
            while let byte = parser.current, byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                parser.index += 1
                count += 1
            }
            return count
        }
        if current == UInt8(ascii: "-") { index += 1 }
        if current == UInt8(ascii: "0") {
            index += 1
            if let byte = current, byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                throw error("leading zero in a number", at: start)
            }
        } else if digits(&self) == 0 {
            throw error("expected a digit", at: index)
        }
        if current == UInt8(ascii: ".") {
            index += 1
            guard digits(&self) > 0 else { throw error("expected a digit after '.'") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard digits(&self) > 0 else { throw error("expected a digit in the exponent") }
        }
        guard index - start <= Self.maxNumberLength else {
            throw error("number longer than \(Self.maxNumberLength) characters", at: start)
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    /// A byte for an error message: printable ASCII as 'c', anything else as hex.
    private func describe(_ byte: UInt8) -> String {
        (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x" + String(byte, radix: 16)
    }
}
