import Glibc

/// `actor-vmm-remote --api-socket PATH <command> [args]`: Cloud Hypervisor's `ch-remote`, for the endpoints
/// ActorVMM implements. It prints a JSON answer exactly as the server sent it; an error answer goes to
/// stderr as one line and the exit code is 1. A bad command line is exit code 2.
public enum RemoteCommand {
    struct Command {
        let name: String
        let endpoint: ApiEndpoint
        let summary: String
    }

    /// ch-remote's subcommand names.
    static let commands: [Command] = [
        Command(name: "ping", endpoint: .vmmPing, summary: "check that the VMM answers (prints its version)"),
        Command(name: "shutdown-vmm", endpoint: .vmmShutdown, summary: "stop the VM, if any, and exit the VMM"),
        Command(name: "create", endpoint: .vmCreate, summary: "create the VM from a VmConfig JSON file (- or none: stdin)"),
        Command(name: "boot", endpoint: .vmBoot, summary: "boot the created VM"),
        Command(name: "pause", endpoint: .vmPause, summary: "pause the running VM"),
        Command(name: "resume", endpoint: .vmResume, summary: "resume the paused VM"),
        Command(name: "shutdown", endpoint: .vmShutdown, summary: "stop the VM (it can be booted again)"),
        Command(name: "reboot", endpoint: .vmReboot, summary: "stop the VM and boot it again from its config"),
        Command(name: "power-button", endpoint: .vmPowerButton, summary: "press the ACPI power button (not available yet)"),
        Command(name: "delete", endpoint: .vmDelete, summary: "stop and forget the VM"),
        Command(name: "info", endpoint: .vmInfo, summary: "print the VM's config and state"),
        Command(name: "counters", endpoint: .vmCounters, summary: "print the per-device counters"),
    ]

    static var usage: String {
        var text = """
            Usage: actor-vmm-remote --api-socket PATH <command> [args]

            Drives an actor-vmm started with --api-socket (the same API as Cloud Hypervisor's; see docs/api.md).

            Commands:

            """
        for command in commands {
            let name = command.name == "create" ? "create [PATH]" : command.name
            text += "  " + name + String(repeating: " ", count: max(1, 16 - name.count)) + command.summary + "\n"
        }
        text += "\nExit codes: 0 success; 1 the VMM refused or could not be reached; 2 bad command line."
        return text
    }

    /// Runs the command line `arguments` (without the program name); returns the exit code.
    public static func run(_ arguments: [String]) -> Int32 {
        var socketPath: String?
        var rest = arguments[...]
        while let argument = rest.first, argument.hasPrefix("-") {
            rest = rest.dropFirst()
            switch argument {
            case "-h", "--help": print(usage); return 0
            case "-V", "--version": print("actor-vmm-remote \(versionNumber)"); return 0
            case "--api-socket":
                guard let value = rest.first else { return usageError("--api-socket: missing value") }
                socketPath = value
                rest = rest.dropFirst()
            default:
                guard argument.hasPrefix("--api-socket=") else { return usageError("unknown option '\(argument)' (see --help)") }
                socketPath = String(argument.dropFirst("--api-socket=".count))
            }
        }
        if let path = socketPath, path.hasPrefix("path=") { socketPath = String(path.dropFirst(5)) }
        guard let socketPath, !socketPath.isEmpty else { return usageError("--api-socket PATH: missing (see --help)") }
        guard let name = rest.first else { return usageError("missing command (see --help)") }
        guard let command = commands.first(where: { $0.name == name }) else {
            return usageError("unknown command '\(name)' (see --help)")
        }
        let arguments = Array(rest.dropFirst())
        var body: [UInt8]?
        if command.endpoint == .vmCreate {
            guard arguments.count <= 1 else { return usageError("create takes one argument, a VmConfig JSON file") }
            switch readInput(arguments.first ?? "-") {
            case .success(let bytes): body = bytes
            case .failure(let error): return failure(error.message)
            }
        } else if !arguments.isEmpty {
            return usageError("\(name) takes no arguments")
        }

        let response: HttpClient.Response
        do {
            response = try HttpClient.send(socketPath: socketPath, method: command.endpoint.method,
                                           path: ApiEndpoint.prefix + command.endpoint.rawValue, body: body)
        } catch {
            return failure("\(socketPath): \(error)")
        }
        guard (200..<300).contains(response.status) else {
            return failure("\(response.status) \(response.reason): \(describeError(response.body))")
        }
        if !response.body.isEmpty {
            var out = response.body + [0x0A]
            _ = out.withUnsafeMutableBytes { write(1, $0.baseAddress, $0.count) }
        }
        return 0
    }

    /// Cloud Hypervisor's error body (a JSON array of messages) as one line; any other body as it is.
    static func describeError(_ body: [UInt8]) -> String {
        if case .array(let items)? = try? JsonParser.parse(body) {
            let messages = items.compactMap { item -> String? in if case .string(let text) = item { text } else { nil } }
            if messages.count == items.count && !messages.isEmpty { return messages.joined(separator: ": ") }
        }
        return body.isEmpty ? "(no details)" : String(decoding: body, as: UTF8.self)
    }

    /// Reads the config file (`-`: stdin), at most 1 MiB.
    static func readInput(_ path: String) -> Result<[UInt8], SocketError> {
        let fd = path == "-" ? 0 : open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(SocketError("\(path): cannot open: \(String(cString: strerror(errno)))")) }
        defer { if fd != 0 { close(fd) } }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while bytes.count <= 1 << 20 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return .failure(SocketError("\(path): cannot read: \(String(cString: strerror(errno)))")) }
            if n == 0 { return .success(bytes) }
            bytes += buffer[0..<n]
        }
        return .failure(SocketError("\(path): larger than 1 MiB"))
    }

    private static func usageError(_ message: String) -> Int32 {
        printLine(2, "actor-vmm-remote: error: \(message)")
        return 2
    }

    private static func failure(_ message: String) -> Int32 {
        printLine(2, "actor-vmm-remote: error: \(message)")
        return 1
    }

    private static func printLine(_ fd: Int32, _ text: String) {
        var bytes = Array((text + "\n").utf8)
        _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
    }
}
