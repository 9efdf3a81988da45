/// A command-line or configuration error: printed as one line, exit code 2, before any VM exists.
struct CliError: Error, Equatable, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}
