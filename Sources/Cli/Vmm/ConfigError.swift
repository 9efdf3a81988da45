/// A configuration field that is wrong, by its path in the VmConfig JSON (`cpus.boot_vcpus`,
/// `disks[0].path`), and why. The command line reports the same problems by option name instead.
struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    let field: String
    let message: String
    /// The same problem as the command line says it, by option (`--net mask=255.0.255.0: not a contiguous
    /// netmask …`), when the config can come from the command line.
    let cli: String?

    /// The parts may quote the client's JSON or arguments (keys, values): control characters in them are
    /// shown escaped, so the error stays one line wherever it is printed or logged.
    init(field: String, _ message: String, cli: String? = nil) {
        self.field = escapingControlCharacters(field)
        self.message = escapingControlCharacters(message)
        self.cli = cli.map(escapingControlCharacters)
    }

    var description: String { "\(field): \(message)" }

    /// The error for the command line: by option if it has that spelling, else by field.
    var cliMessage: String { cli ?? description }
}
