import Glibc

/// A command-line or configuration error: printed as one line, exit code 2, before any VM exists.
struct CliError: Error, Equatable, CustomStringConvertible {
    let message: String
    /// `message` quotes user input as given; control characters in it (a newline, an escape sequence) are
    /// shown escaped, so the error stays one line and cannot drive the terminal it is printed on.
    init(_ message: String) { self.message = escapingControlCharacters(message) }
    var description: String { message }
}

/// `text` with C0 control characters and DEL written as `\n`, `\t`, `\r` or `\u{XX}`.
func escapingControlCharacters(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return text }
    var out = ""
    for scalar in text.unicodeScalars {
        switch scalar.value {
        case 0x0A: out += "\\n"
        case 0x09: out += "\\t"
        case 0x0D: out += "\\r"
        case 0..<0x20, 0x7F: out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// Writes one line to stderr (no stdio buffering: the line is out before the process exits).
func printError(_ message: String) {
    var bytes = Array("actor-vmm: error: \(message)\n".utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}
