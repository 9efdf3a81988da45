@testable import Cli
import Testing

@Suite struct JsonTests {
    func parse(_ text: String) throws(JsonParseError) -> JsonValue { try JsonParser.parse(Array(text.utf8)) }

    @Test func parsesEveryKindOfValue() throws {
        let value = try parse(#" { "a": [1, -2.5e3, true, false, null], "b": {"c": "d"}, "e": "" } "#)
        #expect(value == .object([
            JsonMember(key: "a", value: .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null])),
            JsonMember(key: "b", value: .object(["c": .string("d")])),
            JsonMember(key: "e", value: .string("")),
        ]))
        #expect(value["b"]?["c"] == .string("d"))
        #expect(try parse("0") == .number("0"))
        #expect(try parse("[]") == .array([]))
        #expect(try parse("{}") == .object([]))
    }

    @Test func stringEscapesAndUnicode() throws {
        #expect(try parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{8}\u{c}\n\r\t"))
        #expect(try parse(#""\u00e9\u4e2d""#) == .string("é中"))
        #expect(try parse(#""\ud83d\ude00""#) == .string("😀"), "a surrogate pair")
        #expect(try parse("\"é😀\"") == .string("é😀"), "raw UTF-8")
    }

    @Test func integersAreExactAndRangeChecked() throws {
        let big = try parse("18446744073709551615")
        #expect(big.integer(as: UInt64.self) == UInt64.max)
        #expect(big.integer(as: Int64.self) == nil)
        #expect(try parse("1.0").integer(as: Int.self) == nil)
        #expect(try parse("1e3").integer(as: Int.self) == nil)
        #expect(try parse("-7").integer(as: Int.self) == -7)
        #expect(try parse("-7").integer(as: UInt.self) == nil)
    }

    /// Writing and reading back gives the same value, including strings that need escapes.
    @Test(arguments: [
        JsonValue.object([
            "text": .string("quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é 😀"),
            "list": .array([.int(0), .int(-1), .int(UInt64.max), .number("2.5e-3"), .null, .bool(true)]),
            "nested": .object(["empty": .object([]), "none": .array([])]),
        ]),
        .string(""), .array([.array([.array([])])]), .number("-0"),
    ])
    func roundTrips(value: JsonValue) throws {
        let text = value.serialized()
        #expect(try parse(text) == value, "\(text)")
        #expect(!text.contains("\n"), "compact output")
    }

    @Test func serializesCompactlyInOrder() {
        let value = JsonValue.object(["b": .int(1), "a": .array([.bool(false), .null])])
        #expect(value.serialized() == #"{"b":1,"a":[false,null]}"#)
        #expect(JsonValue.string("a\u{1}b").serialized() == #""a\u0001b""#)
    }

    /// Malformed documents are errors with the byte offset, never a crash.
    @Test(arguments: [
        ("", "expected a value, found the end of the input"),
        ("   ", "expected a value, found the end of the input"),
        ("{", "expected a string key"),
        ("{\"a\" 1}", "expected ':' after an object key"),
        ("{\"a\": 1,}", "expected a string key"),
        ("[1, 2,]", "expected a value, found ']'"),
        ("[1 2]", "expected ',' or ']' in an array"),
        ("{\"a\": 1 \"b\": 2}", "expected ',' or '}' in an object"),
        ("{'a': 1}", "expected a string key"),
        ("{\"a\": 1, \"a\": 2}", "duplicate key \"a\""),
        ("01", "leading zero in a number"),
        ("-", "expected a digit"),
        ("1.", "expected a digit after '.'"),
        ("1e", "expected a digit in the exponent"),
        ("+1", "expected a value, found '+'"),
        ("NaN", "expected a value, found 'N'"),
        ("tru", "invalid literal (expected true)"),
        ("nul", "invalid literal (expected null)"),
        ("\"abc", "unterminated string"),
        ("\"a\nb\"", "control character byte 0xa in a string (escape it)"),
        ("\"\\x\"", "invalid escape \\'x'"),
        ("\"\\u12\"", "expected a hex digit in a \\u escape"),
        ("\"\\ud800\"", "unpaired surrogate \\ud800"),
        ("\"\\ud800\\u0041\"", "unpaired surrogate \\ud800"),
        ("\"\\udc00\"", "unpaired surrogate \\udc00"),
        ("{} {}", "unexpected data after the JSON value"),
        ("[1] x", "unexpected data after the JSON value"),
        ("// comment\n{}", "expected a value, found '/'"),
    ])
    func rejectsMalformed(text: String, reason: String) {
        #expect { try parse(text) } throws: { error in
            (error as? JsonParseError)?.reason == reason
        }
    }

    @Test func rejectsInvalidUtf8() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22]] {
            #expect(throws: JsonParseError(offset: 0, reason: "string is not valid UTF-8")) { try JsonParser.parse(bytes) }
        }
    }

    @Test func errorsGiveTheByteOffset() {
        #expect(throws: JsonParseError(offset: 8, reason: "expected ',' or '}' in an object")) { try parse(#"{"a": 1 ]"#) }
        #expect(throws: JsonParseError(offset: 1, reason: "control character byte 0x0 in a string (escape it)")) {
            try JsonParser.parse([0x22, 0x00, 0x22])
        }
    }

    /// Deep nesting is refused at the limit instead of recursing without bound.
    @Test func depthIsLimited() throws {
        let limit = JsonParser.defaultMaxDepth
        let ok = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(try parse(ok) != .null)
        let tooDeep = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        #expect(throws: JsonParseError(offset: limit, reason: "nesting deeper than \(limit) levels")) { try parse(tooDeep) }
        let hostile = String(repeating: "{\"a\":", count: 100_000)
        #expect(throws: JsonParseError.self) { try parse(hostile) }
    }

    @Test func longNumbersAreRefused() {
        let long = String(repeating: "9", count: JsonParser.maxNumberLength + 1)
        #expect(throws: JsonParseError(offset: 0, reason: "number longer than \(JsonParser.maxNumberLength) characters")) { try parse(long) }
    }
}
