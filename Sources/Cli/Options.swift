import ActorVmm

/// Where a serial port or console goes (`off|null|tty|file=PATH`).
enum ConsoleMode: Equatable {
    /// No device at all.
    case off
    /// The device exists; output is discarded and there is no input.
    case null
    /// Output to stdout, input from stdin (raw mode when stdin is a terminal).
    case tty
    /// Output appended to a file.
    case file(String)

    static func parse(option: String, _ text: String) throws(CliError) -> ConsoleMode {
        let list = try KeyValueList(option: option, text: text, allowedKeys: ["file"], allowsBareWord: true)
        if let path = list["file"] {
            guard !path.isEmpty else { throw CliError("\(option) file=: expected a path") }
            return .file(path)
        }
        switch list[""] {
        case "off": return .off
        case "null": return .null
        case "tty": return .tty
        default: throw CliError("\(option) \(text): expected off, null, tty or file=PATH")
        }
    }
}

/// Everything the command line asks for. Parsing checks syntax and ranges; facts about the host (file
/// readable, memory available) are checked afterwards, still before a VM is created.
struct VmmOptions: Equatable {
    var kernel: String?
    var cmdline = ""
    var bootVcpus = 1
    var maxVcpus = 1
    var memorySize: UInt64 = 512 << 20
    var serial = ConsoleMode.tty
    var console = ConsoleMode.off
    var verbosity = 0
    var logFile: String?
    var handoff = HandoffStrategy.inlineIfIdle
    var testDevice = true
    var apiSocket: ApiSocketOption?
    var showHelp = false
    var showVersion = false

    static let maxVcpuCount = 254
    static let minMemory: UInt64 = 4 << 20

    /// Parses `arguments` (without the program name).
    static func parse(_ arguments: [String]) throws(CliError) -> VmmOptions {
        var options = VmmOptions()
        var seen: Set<String> = []
        var index = 0
        func value(for option: String) throws(CliError) -> String {
            index += 1
            guard index < arguments.count else { throw CliError("\(option): missing value") }
            return arguments[index]
        }
        while index < arguments.count {
            var argument = arguments[index]
            var inlineValue: String?
            if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                inlineValue = String(argument[argument.index(after: equals)...])
                argument = String(argument[..<equals])
            }
            func take() throws(CliError) -> String {
                if let inlineValue { return inlineValue }
                return try value(for: argument)
            }
            if argument.hasPrefix("-v") && argument.dropFirst().allSatisfy({ $0 == "v" }) {
                options.verbosity += argument.count - 1
                index += 1
                continue
            }
            if argument.hasPrefix("--") {
                guard !seen.contains(argument) else { throw CliError("\(argument): given more than once") }
                seen.insert(argument)
            }
            switch argument {
            case "--help", "-h": options.showHelp = true
            case "--version", "-V": options.showVersion = true
            case "--kernel":
                let path = try take()
                guard !path.isEmpty else { throw CliError("--kernel: expected a path") }
                options.kernel = path
            case "--cmdline": options.cmdline = try take()
            case "--cpus":
                let text = try take()
                let list = try KeyValueList(option: "--cpus", text: text, allowedKeys: ["boot", "max"])
                let boot = try list.integer("boot", in: 1...maxVcpuCount) ?? 1
                let max = try list.integer("max", in: 1...maxVcpuCount) ?? boot
                guard max >= boot else { throw CliError("--cpus \(text): max (\(max)) must be at least boot (\(boot))") }
                options.bootVcpus = boot
                options.maxVcpus = max
            case "--memory":
                let text = try take()
                let list = try KeyValueList(option: "--memory", text: text, allowedKeys: ["size"])
                guard let sizeText = list["size"] else { throw CliError("--memory \(text): expected size=SIZE (e.g. size=512M)") }
                guard let size = parseByteSize(sizeText) else {
                    throw CliError("--memory size=\(sizeText): expected a size such as 512M or 1G")
                }
                guard size >= minMemory else { throw CliError("--memory size=\(sizeText): must be at least 4M") }
                guard size % 4096 == 0 else { throw CliError("--memory size=\(sizeText): must be a multiple of 4K") }
                options.memorySize = size
            case "--serial": options.serial = try ConsoleMode.parse(option: "--serial", try take())
            case "--console":
                let mode = try ConsoleMode.parse(option: "--console", try take())
                guard mode == .off else {
                    throw CliError("--console \(mode == .null ? "null" : "tty/file"): virtio-console is not available yet; use --console off and --serial")
                }
                options.console = mode
            case "--log-file":
                let path = try take()
                guard !path.isEmpty else { throw CliError("--log-file: expected a path") }
                options.logFile = path
            case "--handoff":
                let text = try take()
                guard let strategy = HandoffStrategy(rawValue: text) else {
                    throw CliError("--handoff \(text): expected inline, enqueue or task")
                }
                options.handoff = strategy
            case "--api-socket": options.apiSocket = try ApiSocketOption.parse(try take())
            case "--test-device":
                let text = try take()
                switch text {
                case "on": options.testDevice = true
                case "off": options.testDevice = false
                default: throw CliError("--test-device \(text): expected on or off")
                }
            default:
                throw CliError("unknown option '\(argument)' (see --help)")
            }
            index += 1
        }
        if options.serial == .tty && options.console == .tty {
            throw CliError("--serial tty and --console tty: only one of them can use the terminal")
        }
        if !options.showHelp && !options.showVersion && options.kernel == nil && options.apiSocket == nil {
            throw CliError("--kernel: missing (a payload or --api-socket is required; see --help)")
        }
        return options
    }
}

let usage = """
    Usage: actor-vmm --kernel PATH [options]
           actor-vmm --api-socket path=PATH [options]    (create and boot the VM through the API)

    Runs a 64-bit guest on /dev/kvm. Devices are Swift actors on epoll event loops.

    Payload:
      --kernel PATH              ELF64 kernel (vmlinux or the ActorVMM test guest), entered in 64-bit mode
      --cmdline STRING           kernel command line (at most 2047 bytes)
    Machine:
      --cpus boot=N[,max=M]      vCPUs at boot (1-254; default 1); max >= boot
      --memory size=SIZE         guest RAM, e.g. 512M or 1G (default 512M; at least 4M)
    Devices:
      --serial off|null|tty|file=PATH    8250 UART at 0x3f8, IRQ 4 (default tty)
      --console off                      virtio-console (not available yet; default off)
      --test-device on|off               ActorVMM test device at ports 0xa00-0xa0f and MMIO 0xfea00000 (default on)
    API:
      --api-socket path=PATH|fd=N        serve the REST API (Cloud Hypervisor's) on a unix socket; see
                                         docs/api.md and actor-vmm-remote
    Tuning and diagnostics:
      --handoff inline|enqueue|task      how vCPU threads hand exits to device actors (default inline)
      -v, -vv, -vvv                      log more (info: boot-progress codes; debug; trace)
      --log-file PATH                    write the log to PATH instead of stderr
      -h, --help                         this text
      -V, --version                      the version

    Exit codes: 0 the guest powered off or reset; 1 VMM or guest fault; 2 bad command line.
    """

let version = "actor-vmm 0.1.0"
