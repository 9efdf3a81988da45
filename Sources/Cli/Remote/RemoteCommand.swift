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
        Command(name: "power-button", endpoint: .vmPowerButton, summary: "press the ACPI power button"),
        Command(name: "resize", endpoint: .vmResize, summary: "--cpus N and/or --memory SIZE: hot-add or remove vCPUs, add RAM (ACPI) or resize it (virtio-mem)"),
        Command(name: "add-disk", endpoint: .vmAddDisk, summary: "hot-add a disk: the --disk list (path=FILE,readonly=on,id=ID,...)"),
        Command(name: "add-net", endpoint: .vmAddNet, summary: "hot-add a NIC: the --net list (tap=NAME,mac=MAC,id=ID,...)"),
        Command(name: "remove-device", endpoint: .vmRemoveDevice, summary: "ask the guest to eject device ID (a disk or NIC)"),
        Command(name: "delete", endpoint: .vmDelete, summary: "stop and forget the VM"),
        Command(name: "info", endpoint: .vmInfo, summary: "print the VM's config and state"),
        Command(name: "counters", endpoint: .vmCounters, summary: "print the per-device counters"),
        Command(name: "snapshot", endpoint: .vmSnapshot, summary: "write the paused VM to file:///DIR"),
        Command(name: "restore", endpoint: .vmRestore, summary: "restore from source_url=file:///DIR[,resume=on]"),
        Command(name: "send-migration", endpoint: .vmSendMigration, summary: "migrate the running VM to unix:PATH or tcp:HOST:PORT"),
        Command(name: "receive-migration", endpoint: .vmReceiveMigration, summary: "wait on unix:PATH or tcp:HOST:PORT for a VM"),
    ]

    static var usage: String {
        var text = """
            Usage: actor-vmm-remote --api-socket PATH <command> [args]

            Drives an actor-vmm started with --api-socket (the same API as Cloud Hypervisor's; see docs/api.md).

            Commands:

            """
        for command in commands {
            let name = switch command.name {
            case "create": "create [PATH]"
            case "resize": "resize ARGS"
            case "add-disk", "add-net": command.name + " PARAMS"
            case "remove-device": "remove-device ID"
            case "snapshot": "snapshot URL"
            case "restore": "restore ARGS"
            case "send-migration", "receive-migration": command.name + " URL"
            default: command.name
            }
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
        } else if command.endpoint == .vmResize {
            switch Self.resizeBody(arguments) {
            case .success(let bytes): body = bytes
            case .failure(let error): return usageError(error.message)
            }
        } else if [.vmAddDisk, .vmAddNet, .vmRemoveDevice].contains(command.endpoint) {
            guard arguments.count == 1 else { return usageError("\(name) takes one argument (see --help)") }
            switch Self.deviceBody(command.endpoint, arguments[0]) {
            case .success(let bytes): body = bytes
            case .failure(let error): return usageError(error.message)
            }
        } else if command.endpoint.takesBody {
            guard arguments.count == 1 else { return usageError("\(name) takes one argument (see --help)") }
            switch Self.requestBody(command.endpoint, arguments[0]) {
            case .success(let bytes): body = bytes
            case .failure(let error): return usageError(error.message)
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

    struct ArgumentError: Error { let message: String }

    /// The JSON body of snapshot (`URL`), restore (`source_url=URL[,resume=on|off]` or `URL`) as ch-remote
    /// builds it.
    static func requestBody(_ endpoint: ApiEndpoint, _ argument: String) -> Result<[UInt8], ArgumentError> {
        var members: [JsonMember] = []
        switch endpoint {
        case .vmRestore:
            guard argument.contains("=") else {
                members.append(JsonMember(key: "source_url", value: .string(argument)))
                break
            }
            for pair in argument.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { return .failure(ArgumentError(message: "restore \(pair): expected key=value")) }
                switch (parts[0], parts[1]) {
                case ("source_url", let url): members.append(JsonMember(key: "source_url", value: .string(url)))
                case ("resume", "on"), ("resume", "true"): members.append(JsonMember(key: "resume", value: .bool(true)))
                case ("resume", "off"), ("resume", "false"): members.append(JsonMember(key: "resume", value: .bool(false)))
                default: return .failure(ArgumentError(message: "restore \(pair): expected source_url=URL or resume=on|off"))
                }
            }
        case .vmReceiveMigration:
            members.append(JsonMember(key: "receiver_url", value: .string(argument)))
        default:
            members.append(JsonMember(key: "destination_url", value: .string(argument)))
        }
        return .success(Array(JsonValue.object(members).serialized().utf8))
    }

    /// The body of add-disk and add-net (`PARAMS`: the key=value list of `--disk` / `--net`, as ch-remote
    /// takes it) and of remove-device (`ID`).
    static func deviceBody(_ endpoint: ApiEndpoint, _ argument: String) -> Result<[UInt8], ArgumentError> {
        let json: JsonValue
        do throws(CliError) {
            switch endpoint {
            case .vmAddDisk: json = try parseDisk(argument).json
            case .vmAddNet: json = try parseNet(argument).json
            default:
                guard !argument.isEmpty else { return .failure(ArgumentError(message: "remove-device: expected a device id")) }
                json = .object([JsonMember(key: "id", value: .string(argument))])
            }
        } catch {
            return .failure(ArgumentError(message: "\(endpoint == .vmAddDisk ? "add-disk" : "add-net"): \(error)"))
        }
        return .success(Array(json.serialized().utf8))
    }

    /// `resize --cpus N --memory SIZE` (ch-remote's options; SIZE in bytes or with K/M/G) as a VmResize body.
    static func resizeBody(_ arguments: [String]) -> Result<[UInt8], SocketError> {
        var members: [String] = []
        var rest = arguments[...]
        while let option = rest.first {
            rest = rest.dropFirst()
            guard let value = rest.first else { return .failure(SocketError("resize \(option): missing value")) }
            rest = rest.dropFirst()
            switch option {
            case "--cpus":
                guard let count = Int(value), count > 0 else { return .failure(SocketError("resize --cpus \(value): expected a vCPU count")) }
                members.append("\"desired_vcpus\":\(count)")
            case "--memory":
                guard let bytes = parseByteSize(value) else { return .failure(SocketError("resize --memory \(value): expected a size (512M, 2G)")) }
                members.append("\"desired_ram\":\(bytes)")
            default:
                return .failure(SocketError("resize: unknown option '\(option)' (--cpus N, --memory SIZE)"))
            }
        }
        guard !members.isEmpty else { return .failure(SocketError("resize needs --cpus N and/or --memory SIZE")) }
        return .success(Array(("{" + members.joined(separator: ",") + "}").utf8))
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
