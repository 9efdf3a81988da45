import ActorVmm
import Devices

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
    /// A new pseudo-terminal (virtio-console only); its path is logged at start.
    case pty

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
        case "pty" where option == "--console": return .pty
        default:
            throw CliError("\(option) \(text): expected off, null, tty\(option == "--console" ? ", pty" : "") or file=PATH")
        }
    }
}

/// Everything the command line asks for: the VM (``vm``, the same ``VmConfig`` the API's vm.create fills)
/// and the VMM process's own settings. Parsing checks each value's syntax and range, then the VM as a
/// whole (``VmConfig/validate()``); facts about the host (file readable, memory available) are checked
/// afterwards, still before a VM is created.
struct VmmOptions: Equatable {
    /// The VM given on the command line; booted only when it has a kernel (``hasVm``).
    var vm = VmConfig(commandLineDefaults: ())
    var verbosity = 0
    var logFile: String?
    var apiSocket: ApiSocketOption?
    var seccomp = SeccompMode.trap
    var showHelp = false
    var showVersion = false
    /// `--restore source_url=file:///DIR[,resume=on]`: the VM comes from a snapshot instead of a payload.
    var restore: SnapshotRequest?

    /// Whether the command line gives a VM (a `--kernel`), rather than only the API socket.
    var hasVm: Bool { !vm.payload.kernel.isEmpty }

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
            /// Repeatable options also take several values after one flag, as Cloud Hypervisor's do
            /// (`--disk path=a path=b`).
            func takeValues() throws(CliError) -> [String] {
                var values = [try take()]
                while inlineValue == nil, index + 1 < arguments.count, !arguments[index + 1].hasPrefix("-") {
                    index += 1
                    values.append(arguments[index])
                }
                return values
            }
            if argument.hasPrefix("--") && !["--disk", "--net"].contains(argument) {
                guard !seen.contains(argument) else { throw CliError("\(argument): given more than once") }
                seen.insert(argument)
            }
            switch argument {
            case "--help", "-h": options.showHelp = true
            case "--version", "-V": options.showVersion = true
            case "--kernel":
                let path = try take()
                guard !path.isEmpty else { throw CliError("--kernel: expected a path") }
                options.vm.payload.kernel = path
            case "--cmdline": options.vm.payload.cmdline = try take()
            case "--initramfs":
                let path = try take()
                guard !path.isEmpty else { throw CliError("--initramfs: expected a path") }
                options.vm.payload.initramfs = path
            case "--cpus":
                let text = try take()
                let list = try KeyValueList(option: "--cpus", text: text, allowedKeys: ["boot", "max"])
                let boot = try list.integer("boot", in: 1...VmConfig.maxVcpuCount) ?? 1
                let max = try list.integer("max", in: 1...VmConfig.maxVcpuCount) ?? boot
                guard max >= boot else { throw CliError("--cpus \(text): max (\(max)) must be at least boot (\(boot))") }
                options.vm.bootVcpus = boot
                options.vm.maxVcpus = max
            case "--memory":
                let text = try take()
                let list = try KeyValueList(option: "--memory", text: text,
                                            allowedKeys: ["size", "hotplug_method", "hotplug_size", "hotplugged_size"])
                guard let sizeText = list["size"] else { throw CliError("--memory \(text): expected size=SIZE (e.g. size=512M)") }
                guard let size = parseByteSize(sizeText) else {
                    throw CliError("--memory size=\(sizeText): expected a size such as 512M or 1G")
                }
                guard size >= VmConfig.minMemory else { throw CliError("--memory size=\(sizeText): must be at least 4M") }
                guard size % 4096 == 0 else { throw CliError("--memory size=\(sizeText): must be a multiple of 4K") }
                options.vm.memorySize = size
                if let method = list["hotplug_method"] {  // Cloud Hypervisor's spellings
                    guard let parsed = MemoryHotplugMethod(option: method) else {
                        throw CliError("--memory hotplug_method=\(method): expected acpi or virtio-mem")
                    }
                    options.vm.hotplugMethod = parsed
                }
                for key in ["hotplug_size", "hotplugged_size"] {
                    guard let valueText = list[key] else { continue }
                    guard let value = parseByteSize(valueText) else {
                        throw CliError("--memory \(key)=\(valueText): expected a size such as 512M or 1G")
                    }
                    if key == "hotplug_size" { options.vm.hotplugSize = value } else { options.vm.hotpluggedSize = value }
                }
            case "--serial": options.vm.serial = try ConsoleMode.parse(option: "--serial", try take())
            case "--console": options.vm.console = try ConsoleMode.parse(option: "--console", try take())
            case "--disk":
                for value in try takeValues() { options.vm.disks.append(try parseDisk(value)) }
            case "--net":
                for value in try takeValues() { options.vm.net.append(try parseNet(value)) }
            case "--rng":
                var value = inlineValue
                if value == nil, index + 1 < arguments.count, !arguments[index + 1].hasPrefix("-"), arguments[index + 1].contains("=") {
                    index += 1
                    value = arguments[index]
                }
                options.vm.rng = VmConfig.Rng(source: try parseRng(value))
            case "--compat": options.vm.compat = try choice(argument, try take(), expected: "auto, on or off")
            case "--event-loops": options.vm.placement = try choice(argument, try take(), expected: "shared, per-device or per-queue")
            case "--log-file":
                let path = try take()
                guard !path.isEmpty else { throw CliError("--log-file: expected a path") }
                options.logFile = path
            case "--handoff": options.vm.handoff = try choice(argument, try take(), expected: "inline, enqueue or task")
            case "--api-socket": options.apiSocket = try ApiSocketOption.parse(try take())
            case "--seccomp": options.seccomp = try choice(argument, try take(), expected: "true, false or log")
            case "--restore": options.restore = try Self.parseRestore(try take())
            case "--test-device":
                let text = try take()
                switch text {
                case "on": options.vm.testDevice = true
                case "off": options.vm.testDevice = false
                default: throw CliError("--test-device \(text): expected on or off")
                }
            default:
                throw CliError("unknown option '\(argument)' (see --help)")
            }
            index += 1
        }
        do throws(ConfigError) {
            try options.vm.validate()
        } catch {
            throw CliError(error.cliMessage)
        }
        if options.restore != nil && options.hasVm {
            throw CliError("--restore: the VM comes from the snapshot; do not give --kernel too")
        }
        if !options.showHelp && !options.showVersion && !options.hasVm && options.apiSocket == nil && options.restore == nil {
            throw CliError("--kernel: missing (a payload or --api-socket is required; see --help)")
        }
        return options
    }
}

/// A value from a fixed set of words (an enum's raw values), or an error naming the option and the set.
func choice<T: RawRepresentable>(_ option: String, _ text: String, expected: String) throws(CliError) -> T
where T.RawValue == String {
    guard let value = T(rawValue: text) else { throw CliError("\(option) \(text): expected \(expected)") }
    return value
}

let usage = """
    Usage: actor-vmm --kernel PATH [options]
           actor-vmm --api-socket path=PATH [options]    (create and boot the VM through the API)

    Runs a 64-bit guest on /dev/kvm. Devices are Swift actors on epoll event loops.

    Payload:
      --kernel PATH              bzImage, ELF vmlinux (PVH when it has the note) or ELF64 (e.g. the test guest)
      --initramfs PATH           initramfs (cpio), placed at the top of low RAM
      --cmdline STRING           kernel command line (at most 2047 bytes)
    Machine:
      --cpus boot=N[,max=M]      vCPUs at boot (1-254; default 1); max >= boot
      --memory size=SIZE[,hotplug_method=acpi|virtio-mem,hotplug_size=SIZE[,hotplugged_size=SIZE]]
                                 guest RAM, e.g. 512M or 1G (default 512M; at least 4M); hotplug_size:
                                 how much vm.resize may add (multiples of 128M); virtio-mem: a device
                                 whose hotplugged_size (multiples of 2M) the guest plugs at boot
    Devices:
      --serial off|null|tty|file=PATH    8250 UART at 0x3f8, IRQ 4 (default null)
      --console off|null|tty|file=PATH|pty   virtio-console, hvc0 (default tty)
      --disk path=FILE[,readonly=on][,direct=on][,num_queues=N][,queue_size=M][,id=ID] [path=…]
                                     virtio-blk on a raw image (repeatable)
      --net [tap=NAME][,mac=MAC][,ip=IP][,mask=MASK][,id=ID] [tap=…]   virtio-net on a TAP interface (repeatable);
                                         no tap: the VMM creates vmtapN and removes it at exit; no mac: random;
                                         no ip/mask: 192.168.249.1/255.255.255.0 on a TAP the VMM creates
      --rng [src=PATH]                   virtio-rng from PATH (default /dev/urandom)
      --event-loops shared|per-device|per-queue   device actors on one event loop, one per virtio device, or
                                         also one per virtio-blk queue and virtio-net queue pair (default shared)
      --test-device on|off               ActorVMM test device at ports 0xa00-0xa0f and MMIO 0xfea00000 (default on)
    API:
      --api-socket path=PATH|fd=N        serve the REST API (Cloud Hypervisor's) on a unix socket; see
                                         docs/api.md and actor-vmm-remote
      --restore source_url=file:///DIR[,resume=on]   the VM from a snapshot (vm.snapshot), paused unless
                                         resume=on; instead of --kernel and the devices (docs/snapshot.md)
    Tuning and diagnostics:
      --compat auto|on|off               host compatibility mode for nested hosts without VMX (kvm_pvm): emulate
                                         what the host's emulator rejects, no PIT, Linux parameters appended,
                                         KVM's hypercall features hidden from CPUID
                                         (default auto: on when the host needs it; docs/compat.md)
      --handoff inline|enqueue|task      how vCPU threads hand exits to device actors (default inline)
      --seccomp true|false|log           system-call filters per thread: a call outside its list ends the
                                         VMM with a message (true, the default), is only logged by the
                                         kernel (log), or no filters (false); docs/security.md
      -v, -vv, -vvv                      log more (info: boot-progress codes; debug; trace)
      --log-file PATH                    write the log to PATH instead of stderr
      -h, --help                         this text
      -V, --version                      the version

    A guest reset reboots the VM. Exit codes: 0 the guest powered off or a stop signal; 1 VMM or guest
    fault; 2 bad command line.
    """

let version = "actor-vmm 0.1.0"

extension VmmOptions {
    /// `source_url=file:///DIR[,resume=on|off]` (Cloud Hypervisor's `--restore`).
    static func parseRestore(_ text: String) throws(CliError) -> SnapshotRequest {
        var request = SnapshotRequest(url: "")
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            switch (parts.first, parts.count == 2 ? parts[1] : nil) {
            case ("source_url", let url?): request.url = url
            case ("resume", "on"?), ("resume", "true"?): request.resume = true
            case ("resume", "off"?), ("resume", "false"?): request.resume = false
            case ("prepare", _): break
            default: throw CliError("--restore \(pair): expected source_url=file:///DIR, resume=on|off")
            }
        }
        guard request.url.hasPrefix("file:///") else {
            throw CliError("--restore \(text): expected source_url=file:///DIR (an absolute directory)")
        }
        return request
    }
}
