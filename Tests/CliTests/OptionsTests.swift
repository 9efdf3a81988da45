@testable import Cli
import Testing

@Suite struct OptionsTests {
    /// Found by the cli_options fuzz target: an argument holding a newline made a two-line error, and an
    /// escape sequence in one went to the terminal as is.
    @Test func errorsQuotingInputStayOneLine() {
        for arguments in [["\n"], ["--cpus", "boot=1\n2"], ["--memory", "size=\u{1B}[2J"], ["--serial", "x\r\u{7F}"]] {
            let error = #expect(throws: CliError.self) { try VmmOptions.parse(arguments) }
            let message = error?.message ?? ""
            #expect(!message.isEmpty && !message.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "\(arguments)")
        }
        #expect(escapingControlCharacters("a\nb\u{1B}c\u{7F}") == "a\\nb\\u{1B}c\\u{7F}")
    }

    @Test func parsesCloudHypervisorSyntax() throws {
        let o = try VmmOptions.parse([
            "--kernel", "k.elf", "--cmdline", "console=ttyS0 tests=a,b", "--cpus", "boot=2,max=4",
            "--memory", "size=1G", "--serial", "file=/tmp/s.log", "--console", "off", "-vv",
        ])
        #expect(o.vm.payload.kernel == "k.elf")
        #expect(o.vm.payload.cmdline == "console=ttyS0 tests=a,b")
        #expect(o.vm.bootVcpus == 2 && o.vm.maxVcpus == 4)
        #expect(o.vm.memorySize == 1 << 30)
        #expect(o.vm.serial == .file("/tmp/s.log"))
        #expect(o.vm.console == .off)
        #expect(o.verbosity == 2)
    }

    @Test func acceptsEqualsForm() throws {
        let o = try VmmOptions.parse(["--kernel=k", "--memory=size=64M", "--serial=null"])
        #expect(o.vm.memorySize == 64 << 20)
        #expect(o.vm.serial == .null)
    }

    @Test func defaults() throws {
        let o = try VmmOptions.parse(["--kernel", "k"])
        #expect(o.vm.bootVcpus == 1 && o.vm.maxVcpus == 1)
        #expect(o.vm.memorySize == 512 << 20)
        #expect(o.vm.serial == .null && o.vm.console == .tty)  // Cloud Hypervisor's defaults
        #expect(o.vm.disks.isEmpty && o.vm.net.isEmpty && o.vm.rng == nil && o.vm.placement == .shared)
        #expect(o.vm.handoff == .inlineIfIdle && o.vm.testDevice)
        #expect(o.seccomp == .trap)  // filters on, as Cloud Hypervisor's default
    }

    @Test func seccompModes() throws {
        #expect(try VmmOptions.parse(["--kernel", "k", "--seccomp", "false"]).seccomp == .off)
        #expect(try VmmOptions.parse(["--kernel", "k", "--seccomp=log"]).seccomp == .log)
        #expect(try VmmOptions.parse(["--kernel", "k", "--seccomp", "true"]).seccomp == .trap)
        #expect(throws: CliError("--seccomp on: expected true, false or log")) {
            try VmmOptions.parse(["--kernel", "k", "--seccomp", "on"])
        }
    }

    @Test func sizes() {
        #expect(parseByteSize("512M") == 512 << 20)
        #expect(parseByteSize("1G") == 1 << 30)
        #expect(parseByteSize("4096") == 4096)
        #expect(parseByteSize("64k") == 64 << 10)
        #expect(parseByteSize("") == nil)
        #expect(parseByteSize("M") == nil)
        #expect(parseByteSize("12X") == nil)
        #expect(parseByteSize("-1M") == nil)
        #expect(parseByteSize("99999999999999999999G") == nil)
        #expect(parseByteSize("17179869184G") == nil, "overflows 64 bits")
        // Digits are ASCII 0-9 only (compared as bytes): other Unicode digits, signs and spaces are refused.
        #expect(parseByteSize("\u{0661}\u{0662}M") == nil, "Arabic-Indic digits")
        #expect(parseByteSize("\u{FF11}G") == nil, "a full-width digit")
        #expect(parseByteSize("+4M") == nil)
        #expect(parseByteSize("4 M") == nil)
        #expect(parseByteSize("0009") == 9)
    }

    /// Every bad input is one error naming the option and what was expected.
    @Test(arguments: [
        (["--kernel", "k", "--memory", "size=0"], "--memory size=0: must be at least 4M"),
        (["--kernel", "k", "--memory", "size=12Q"], "--memory size=12Q: expected a size such as 512M or 1G"),
        (["--kernel", "k", "--memory", "size=5000"], "--memory size=5000: must be at least 4M"),
        (["--kernel", "k", "--memory", "size=4097K"], "--memory size=4097K: must be a multiple of 4K"),
        (["--kernel", "k", "--memory", "bytes=1G"], "--memory: unknown key 'bytes' (expected one of: hotplug_method, hotplug_size, hotplugged_size, size)"),
        (["--kernel", "k", "--memory", "1G"], "--memory 1G: '1G' is not key=value"),
        (["--kernel", "k", "--cpus", "boot=0"], "--cpus boot=0: expected an integer from 1 to 254"),
        (["--kernel", "k", "--cpus", "boot=300"], "--cpus boot=300: expected an integer from 1 to 254"),
        (["--kernel", "k", "--cpus", "boot=4,max=2"], "--cpus boot=4,max=2: max (2) must be at least boot (4)"),
        (["--kernel", "k", "--cpus", "boot=x"], "--cpus boot=x: expected an integer from 1 to 254"),
        (["--kernel", "k", "--frobnicate"], "unknown option '--frobnicate' (see --help)"),
        (["--kernel"], "--kernel: missing value"),
        (["--cmdline", "x"], "--kernel: missing (a payload or --api-socket is required; see --help)"),
        (["--kernel", "a", "--kernel", "b"], "--kernel: given more than once"),
        (["--kernel", "k", "--handoff", "fast"], "--handoff fast: expected inline, enqueue or task"),
        (["--kernel", "k", "--memory", "size=1G,size=2G"], "--memory: key 'size' given twice"),
        (["--kernel", "k", "--memory", "size=1G,hotplug_size=100M"], "--memory hotplug_size=100M: must be a multiple of 128 MiB (134217728)"),
        (["--kernel", "k", "--memory", "size=1G,hotplug_method=dimm"], "--memory hotplug_method=dimm: expected acpi or virtio-mem"),
    ])
    func rejectsBadInput(arguments: [String], message: String) {
        #expect(throws: CliError(message)) { try VmmOptions.parse(arguments) }
    }

    @Test func memoryHotplugOptions() throws {
        let o = try VmmOptions.parse(["--kernel", "k", "--cpus", "boot=2,max=4", "--memory", "size=512M,hotplug_method=acpi,hotplug_size=1G"])
        #expect(o.vm.memorySize == 512 << 20 && o.vm.hotplugSize == 1 << 30 && o.vm.bootVcpus == 2 && o.vm.maxVcpus == 4)
        #expect(try VmmOptions.parse(["--kernel", "k"]).vm.hotplugSize == 0)
        // The API's spelling, and back into vm.info.
        let json = try JsonParser.parse(Array("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": 536870912, \"hotplug_size\": 268435456, \"hotplug_method\": \"Acpi\"}}".utf8))
        let config = try VmConfig(json: json)
        #expect(config.hotplugSize == 256 << 20)
        #expect(config.json["memory"]?["hotplug_size"] == .int(256 << 20))
        let odd = try JsonParser.parse(Array("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": 536870912, \"hotplug_size\": 4096}}".utf8))
        #expect(throws: ConfigError.self) { try VmConfig(json: odd).validate() }
    }

    @Test func deviceOptions() throws {
        let o = try VmmOptions.parse([
            "--kernel", "k", "--disk", "path=a.raw", "path=b.raw,readonly=on,id=b", "--disk", "path=c.raw,direct=on",
            "--net", "tap=tap0,mac=52:54:00:12:34:56,ip=192.168.249.1,mask=255.255.255.0", "--rng",
            "--console", "pty", "--serial", "tty", "--event-loops", "per-device",
        ])
        #expect(o.vm.disks.map(\.path) == ["a.raw", "b.raw", "c.raw"])
        #expect(o.vm.disks.map(\.readonly) == [false, true, false] && o.vm.disks[1].id == "b" && o.vm.disks[2].direct)
        #expect(o.vm.disks.allSatisfy { $0.numQueues == 1 && $0.queueSize == 128 }, "Cloud Hypervisor's defaults")
        let mq = try VmmOptions.parse(["--kernel", "k", "--disk", "path=a.raw,num_queues=4,queue_size=64"]).vm.disks[0]
        #expect(mq.backendOptions.numQueues == 4 && mq.backendOptions.queueSize == 64)
        #expect(o.vm.net == [VmConfig.Net(tap: "tap0", mac: "52:54:00:12:34:56", ip: "192.168.249.1", mask: "255.255.255.0", id: nil)])
        #expect(o.vm.rng?.source == "/dev/urandom" && o.vm.console == .pty && o.vm.placement == .perDevice)
        #expect(try VmmOptions.parse(["--kernel", "k", "--rng", "src=/dev/random"]).vm.rng?.source == "/dev/random")
        #expect(try VmmOptions.parse(["--kernel", "k", "--event-loops", "per-queue"]).vm.placement == .perQueue)
        let random = try VmmOptions.parse(["--kernel", "k", "--net", "tap=t"]).vm.net[0].backendOptions.mac
        #expect(random[0] & 0x03 == 0x02, "locally administered unicast")
    }

    @Test(arguments: [
        (["--kernel", "k", "--disk", "readonly=on"], "--disk readonly=on: expected path=FILE"),
        (["--kernel", "k", "--disk", "path=a,readonly=yes"], "--disk readonly=yes: expected on or off"),
        (["--kernel", "k", "--disk", "path=a,cache=off"], "--disk: unknown key 'cache' (expected one of: direct, id, num_queues, path, queue_size, readonly)"),
        (["--kernel", "k", "--disk", "path=a,num_queues=0"], "--disk num_queues=0: expected an integer from 1 to 64"),
        (["--kernel", "k", "--disk", "path=a,queue_size=512"], "--disk queue_size=512: expected an integer from 2 to 256"),
        (["--kernel", "k", "--disk", "path=a,queue_size=100"], "--disk path=a,queue_size=100: queue_size 100: expected a power of 2 from 2 to 256"),
        (["--kernel", "k", "--net", "tap=t,mac=52:54:00:12:34"], "--net mac=52:54:00:12:34: expected six hex bytes like 52:54:00:12:34:56"),
        (["--kernel", "k", "--net", "tap=t,mac=01:00:00:00:00:01"], "--net mac=01:00:00:00:00:01: a multicast address cannot be a NIC's address"),
        (["--kernel", "k", "--net", "tap=t,ip=300.1.1.1,mask=255.0.0.0"], "--net ip=300.1.1.1: expected a dotted IPv4 address"),
        (["--kernel", "k", "--net", "tap=,mask=255.0.255.0"], "--net mask=255.0.255.0: not a contiguous netmask (ones, then zeros: 255.255.255.0)"),
        (["--kernel", "k", "--net", "mask=0.255.255.255"], "--net mask=0.255.255.255: not a contiguous netmask (ones, then zeros: 255.255.255.0)"),
        (["--kernel", "k", "--net", "ip=fe80::1,mask=255.255.255.0"], "--net ip=fe80::1: expected a dotted IPv4 address"),
        (["--kernel", "k", "--net", "tap=,mac=zz:54:00:12:34:56"], "--net mac=zz:54:00:12:34:56: expected six hex bytes like 52:54:00:12:34:56"),
        (["--kernel", "k", "--net", "tap=a/b"], "--net tap=a/b: not a valid interface name (no '/', spaces, '.' or '..')"),
        (["--kernel", "k", "--net", "tap=,tap="], "--net: key 'tap' given twice"),
        (["--kernel", "k", "--net", "tap=a-very-long-interface-name"], "--net tap=a-very-long-interface-name: interface names have at most 15 bytes"),
        (["--kernel", "k", "--rng", "source=/dev/random"], "--rng: unknown key 'source' (expected one of: src)"),
        (["--kernel", "k", "--console", "socket"], "--console socket: expected off, null, tty, pty or file=PATH"),
        (["--kernel", "k", "--serial", "pty"], "--serial pty: expected off, null, tty or file=PATH"),
        (["--kernel", "k", "--event-loops", "many"], "--event-loops many: expected shared, per-device or per-queue"),
        (["--kernel", "k", "--event-loops", "per_queue"], "--event-loops per_queue: expected shared, per-device or per-queue"),
        (["--kernel", "k", "--disk", "path=a,id=123456789012345678901"], "--disk id=123456789012345678901: at most 20 bytes (it is the virtio-blk serial)"),
        (["--kernel", "k", "--disk", "path=a,id=x", "--net", "id=x"], "--net id=x: already the id of another device"),
        (["--kernel", "k", "--disk", "path=a,id=__rng"], "--disk id=__rng: ids starting with __ are reserved for the VMM's own devices"),
        (["--kernel", "k", "--net", "id=serial"], "--net id=serial: serial is the id of one of the VMM's own devices"),
        (["--kernel", "k", "--serial", "tty"], "--serial tty: the console already uses the terminal (its default is tty); add --console off or choose another"),
    ])
    func rejectsBadDeviceOptions(arguments: [String], message: String) {
        #expect(throws: CliError(message)) { try VmmOptions.parse(arguments) }
    }

    /// Cloud Hypervisor's `--net` keys with empty values mean their defaults: the VMM creates the TAP,
    /// picks a random locally administered MAC, and (for the TAP it creates) uses 192.168.249.1/24.
    @Test(arguments: ["tap=,mac=,ip=,mask=", "tap=", "mac=", "ip=,mask=,id="])
    func emptyNetValuesMeanTheDefaults(text: String) throws {
        let net = try #require(try VmmOptions.parse(["--kernel", "k", "--net", text]).vm.net.first)
        #expect(net.tap == nil && net.ip == nil && net.mask == nil && net.id == nil)
        let mac = net.backendOptions.mac
        #expect(mac.count == 6 && mac[0] & 0x03 == 0x02, "locally administered unicast: \(mac)")
        #expect(net.backendOptions == .init(tap: nil, mac: mac, address: nil, netmask: nil, id: nil), "the MAC is chosen once, at parse")
        let other = try #require(try VmmOptions.parse(["--kernel", "k", "--net", text]).vm.net.first)
        #expect(other.mac != net.mac, "a new random MAC each time")
    }

    @Test func netAddressesReachTheBackendInNetworkOrder() throws {
        let net = try #require(try VmmOptions.parse(["--kernel", "k", "--net", "ip=10.1.2.3,mask=255.255.255.128"]).vm.net.first)
        #expect(net.tap == nil && net.ip == "10.1.2.3" && net.mask == "255.255.255.128")
        #expect(net.backendOptions.address == UInt32(0x0A01_0203).bigEndian)
        #expect(net.backendOptions.netmask == UInt32(0xFFFF_FF80).bigEndian)
        // Either one alone: the other keeps its default where the VMM configures the TAP.
        #expect(try VmmOptions.parse(["--kernel", "k", "--net", "tap=t,ip=10.0.0.1"]).vm.net.first?.mask == nil)
        #expect(try VmmOptions.parse(["--kernel", "k", "--net", "mask=255.255.0.0"]).vm.net.first?.ip == nil)
    }

    /// The seeds' command line (Cloud Hypervisor's README), verbatim but for the paths.
    @Test func acceptsTheSeedsCommandLineVerbatim() throws {
        let o = try VmmOptions.parse(["--kernel", "K", "--disk", "path=D", "--cmdline", "console=hvc0 root=/dev/vda1 rw",
                                      "--cpus", "boot=4", "--memory", "size=1024M", "--net", "tap=,mac=,ip=,mask="])
        #expect(o.vm.payload.kernel == "K" && o.vm.payload.cmdline == "console=hvc0 root=/dev/vda1 rw")
        #expect(o.vm.disks.map(\.path) == ["D"] && o.vm.bootVcpus == 4 && o.vm.maxVcpus == 4 && o.vm.memorySize == 1024 << 20)
        #expect(o.vm.net.count == 1 && o.vm.net[0].tap == nil && o.vm.net[0].ip == nil && o.vm.net[0].mask == nil)
        #expect(throws: Never.self) { try o.vm.validate() }
        #expect(o.vm.net[0].backendOptions.mac == o.vm.net[0].backendOptions.mac, "the random MAC is fixed in the config")
    }

    @Test func helpAndVersionNeedNoKernel() throws {
        #expect(try VmmOptions.parse(["--help"]).showHelp)
        #expect(try VmmOptions.parse(["--version"]).showVersion)
    }
}
