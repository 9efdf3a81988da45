import ActorVmm
@testable import Cli
import Testing

@Suite struct VmConfigJsonTests {
    func decode(_ text: String) throws -> VmConfig {
        try VmConfig(json: try JsonParser.parse(Array(text.utf8)))
    }

    func error(_ text: String) -> ConfigError? {
        do {
            _ = try decode(text)
            return nil
        } catch let error as ConfigError {
            return error
        } catch {
            Issue.record("not a ConfigError: \(error)")
            return nil
        }
    }

    @Test func minimalConfigGetsCloudHypervisorDefaults() throws {
        let config = try decode(#"{"payload": {"kernel": "/k"}}"#)
        #expect(config.payload == VmConfig.Payload(kernel: "/k", cmdline: "", initramfs: nil))
        #expect(config.bootVcpus == 1 && config.maxVcpus == 1)
        #expect(config.memorySize == 512 << 20)
        #expect(config.serial == .null && config.console == .off)
        #expect(config.handoff == .inlineIfIdle && config.testDevice)
    }

    @Test func fullConfig() throws {
        let config = try decode("""
            {"payload": {"kernel": "/k", "cmdline": "console=ttyS0", "firmware": null},
             "cpus": {"boot_vcpus": 2, "max_vcpus": 4, "kvm_hyperv": false, "nested": true, "affinity": []},
             "memory": {"size": 67108864, "shared": false, "hugepages": false, "hotplug_method": "Acpi", "zones": null},
             "serial": {"mode": "File", "file": "/tmp/s.log"}, "console": {"mode": "Off", "iommu": false},
             "iommu": false, "watchdog": false, "pvpanic": false, "balloon": null, "fs": [], "platform": {},
             "debug_console": {"mode": "Off"},
             "actor_vmm": {"handoff": "enqueue", "test_device": false}}
            """)
        #expect(config.payload.cmdline == "console=ttyS0")
        #expect(config.bootVcpus == 2 && config.maxVcpus == 4)
        #expect(config.memorySize == 64 << 20)
        #expect(config.serial == .file("/tmp/s.log"))
        #expect(config.handoff == .enqueueAndWait && !config.testDevice)
    }

    /// What vm.info reports reads back as the same config.
    @Test func encodingRoundTrips() throws {
        var config = VmConfig(payload: .init(kernel: "/boot/vmlinux", cmdline: "a \"quoted\" b", initramfs: "/i"))
        config.bootVcpus = 3
        config.maxVcpus = 8
        config.memorySize = 1 << 30
        config.serial = .tty
        config.console = .file("/tmp/c")
        config.disks = [.init(path: "/d.img", readonly: true), .init(path: "/e.img", numQueues: 4, queueSize: 64)]
        config.net = [.init(tap: "tap0", mac: "12:34:56:78:9a:bc", ip: "10.0.0.1", mask: nil)]
        config.rng = .init(source: "/dev/urandom")
        config.handoff = .task
        config.testDevice = false
        config.placement = .perQueue
        let text = config.json.serialized()
        #expect(text.contains(#""event_loops":"per-queue""#), "a snapshot's config keeps the placement: \(text)")
        #expect(try VmConfig(json: try JsonParser.parse(Array(text.utf8))) == config, "\(text)")
    }

    /// Each invalid config is refused with the path of the field that is wrong.
    @Test(arguments: [
        (#"[]"#, "body", "expected an object, got an array"),
        (#"{}"#, "payload", "missing (required)"),
        (#"{"payload": {}}"#, "payload.kernel", "missing (ActorVMM boots a kernel"),
        (#"{"payload": {"kernel": ""}}"#, "payload.kernel", "must not be empty"),
        (#"{"payload": {"kernel": 7}}"#, "payload.kernel", "expected a string, got a number"),
        (#"{"payload": {"kernel": "/k", "firmware": "/fw"}}"#, "payload.firmware", "is not supported by actor-vmm"),
        (#"{"payload": {"kernel": "/k", "kernal": "/k"}}"#, "payload.kernal", "unknown field"),
        (#"{"payload": {"kernel": "/k"}, "cpu": {}}"#, "cpu", "unknown field"),
        (#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 0, "max_vcpus": 1}}"#, "cpus.boot_vcpus", "expected an integer from 1 to 254"),
        (#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 1.5, "max_vcpus": 1}}"#, "cpus.boot_vcpus", "expected an integer from 1 to 254"),
        (#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": "2", "max_vcpus": 2}}"#, "cpus.boot_vcpus", "expected an integer, got a string"),
        (#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 2}}"#, "cpus.max_vcpus", "missing (required)"),
        (#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 4, "max_vcpus": 2}}"#, "cpus.max_vcpus", "must be at least boot_vcpus (4)"),
        (#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 1, "max_vcpus": 1, "nested": false}}"#, "cpus.nested", "is not supported by actor-vmm"),
        (#"{"payload": {"kernel": "/k"}, "memory": {}}"#, "memory.size", "missing (required)"),
        (#"{"payload": {"kernel": "/k"}, "memory": {"size": -1}}"#, "memory.size", "expected an integer from 1 to"),
        (#"{"payload": {"kernel": "/k"}, "memory": {"size": 4096}}"#, "memory.size", "must be at least 4 MiB"),
        (#"{"payload": {"kernel": "/k"}, "memory": {"size": 4194305}}"#, "memory.size", "must be a multiple of 4096"),
        (#"{"payload": {"kernel": "/k"}, "memory": {"size": 4194304, "hugepages": true}}"#, "memory.hugepages", "is not supported by actor-vmm"),
        (#"{"payload": {"kernel": "/k"}, "serial": {}}"#, "serial.mode", "missing (required)"),
        (#"{"payload": {"kernel": "/k"}, "serial": {"mode": "tty"}}"#, "serial.mode", "\"tty\" is not one of Off, Pty, Tty, File, Socket, Null"),
        (#"{"payload": {"kernel": "/k"}, "serial": {"mode": "Pty"}}"#, "serial.mode", "Pty is not supported yet"),
        (#"{"payload": {"kernel": "/k"}, "serial": {"mode": "File"}}"#, "serial.file", "missing (mode File needs a path)"),
        (#"{"payload": {"kernel": "/k"}, "console": {"mode": "Socket", "socket": "/s"}}"#, "console.mode", "Socket is not supported yet"),
        (#"{"payload": {"kernel": "/k"}, "disks": {}}"#, "disks", "expected an array, got an object"),
        (#"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a"}, {"readonly": true}]}"#, "disks[1].path", "missing (required)"),
        (#"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a", "readonly": "yes"}]}"#, "disks[0].readonly", "expected true or false, got a string"),
        (#"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a", "image_type": "qcow2"}]}"#, "disks[0].image_type", "is not one of"),
        (#"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a", "bogus": 1}]}"#, "disks[0].bogus", "unknown field"),
        (#"{"payload": {"kernel": "/k"}, "net": [{"mac": "12:34:56"}]}"#, "net[0].mac", "is not a MAC address"),
        (#"{"payload": {"kernel": "/k"}, "net": [{"mtu": 9}]}"#, "net[0].mtu", "expected an integer from 68 to 65535"),
        (#"{"payload": {"kernel": "/k"}, "rng": {}}"#, "rng.src", "missing (required)"),
        (#"{"payload": {"kernel": "/k"}, "rng": {"src": "/dev/urandom", "iommu": true}}"#, "rng.iommu", "is not supported by actor-vmm"),
        (#"{"payload": {"kernel": "/k"}, "vsock": {"cid": 3, "socket": "/v"}}"#, "vsock", "is not supported by actor-vmm"),
        (#"{"payload": {"kernel": "/k"}, "watchdog": true}"#, "watchdog", "is not supported by actor-vmm"),
        (#"{"payload": {"kernel": "/etc/passwd\u0000.elf"}}"#, "payload.kernel", "must not contain a NUL character"),
        (#"{"payload": {"kernel": "/k", "cmdline": "a\u0000b"}}"#, "payload.cmdline", "must not contain a NUL character"),
        (#"{"payload": {"kernel": "/k"}, "actor_vmm": {"handoff": "fast"}}"#, "actor_vmm.handoff", "\"fast\" is not one of inline, enqueue, task"),
        (#"{"payload": {"kernel": "/k"}, "actor_vmm": {"event_loops": "per-cpu"}}"#, "actor_vmm.event_loops",
         "\"per-cpu\" is not one of shared, per-device, per-queue"),
    ])
    func invalidConfigNamesTheField(text: String, field: String, fragment: String) {
        let error = error(text)
        #expect(error?.field == field, "\(text): \(String(describing: error))")
        #expect(error?.message.contains(fragment) == true, "\(text): \(String(describing: error))")
    }

    /// Found by the vmconfig fuzz target: a value (or key) holding a newline made a two-line error.
    @Test func errorsQuotingTheBodyStayOneLine() {
        let bodies = [
            #"{"payload": {"kernel": "/k"}, "net": [{"tap": "t", "mac": "52:54:00:12:3\n4:56"}]}"#,
            #"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 1, "x\u001b[2Jy": 1}}"#,
        ]
        for body in bodies {
            let description = error(body)?.description ?? ""
            #expect(!description.isEmpty && !description.unicodeScalars.contains { $0.value < 0x20 }, "\(body)")
        }
    }

    @Test func cmdlineLengthIsCheckedAtTheField() {
        let long = String(repeating: "x", count: 2048)
        #expect(error(#"{"payload": {"kernel": "/k", "cmdline": "\#(long)"}}"#)
                == ConfigError(field: "payload.cmdline", "2048 bytes is too long (at most 2047 bytes)"))
    }

    /// The devices that exist (virtio-block, -net, -rng, -console) and an initramfs are accepted when their
    /// shape maps onto the command line's options.
    @Test(arguments: [
        #"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a", "readonly": true, "num_queues": 1}]}"#,
        #"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a", "num_queues": 8, "queue_size": 256}]}"#,
        #"{"payload": {"kernel": "/k"}, "net": [{"tap": "tap0", "mac": "12:34:56:78:9a:bc"}]}"#,
        #"{"payload": {"kernel": "/k"}, "net": [{"tap": "tap0", "ip": "10.0.0.1", "mask": "255.255.255.0"}]}"#,
        #"{"payload": {"kernel": "/k"}, "net": [{"mac": "12:34:56:78:9a:bc"}, {"tap": ""}, {"ip": "10.0.0.1"}, {}]}"#,
        #"{"payload": {"kernel": "/k"}, "rng": {"src": "/dev/urandom"}}"#,
        #"{"payload": {"kernel": "/k"}, "console": {"mode": "Tty"}}"#,
        #"{"payload": {"kernel": "/k", "initramfs": "/i"}}"#,
    ])
    func existingDevicesAreAccepted(text: String) throws {
        let config = try decode(text)
        #expect(throws: Never.self) { try config.validate() }
    }

    /// `tap` absent or empty: the VMM creates the TAP (Cloud Hypervisor's `vmtap%d`); no `mac`: a random one
    /// per device; no `ip`/`mask`: the defaults, applied when the TAP is configured (not written into the config).
    @Test func netWithoutATapMeansTheVmmCreatesOne() throws {
        let config = try decode(#"{"payload": {"kernel": "/k"}, "net": [{"tap": "", "ip": "10.0.0.1"}, {}]}"#)
        #expect(config.net == [.init(tap: nil, mac: nil, ip: "10.0.0.1", mask: nil, id: nil), .init()])
        #expect(throws: Never.self) { try config.validate() }
        let nets = config.net.map(\.backendOptions)
        #expect(nets.count == 2 && nets.allSatisfy { $0.tap == nil })
        #expect(nets[0].mac != nets[1].mac && nets.allSatisfy { $0.mac[0] & 3 == 2 }, "\(nets.map(\.mac))")
        #expect(nets[0].address == UInt32(0x0A00_0001).bigEndian && nets[0].netmask == nil)
        guard case .array(let nets)? = config.json["net"], case .object(let members)? = nets.first else {
            Issue.record("no net in \(config.json)")
            return
        }
        #expect(members.map(\.key) == ["ip"], "no tap written back")
    }

    /// What the schema allows but the devices cannot do is refused by field; never pretended.
    @Test(arguments: [
        (#"{"payload": {"kernel": "/k"}, "net": [{"tap": "a-name-longer-than-15"}]}"#, "net[0].tap", "at most 15 bytes"),
        (#"{"payload": {"kernel": "/k"}, "net": [{"tap": "tap0", "mac": "13:34:56:78:9a:bc"}]}"#, "net[0].mac", "multicast"),
        (#"{"payload": {"kernel": "/k"}, "net": [{"tap": "tap0", "ip": "10.0.0.1", "mask": "255.255.0.255"}]}"#, "net[0].mask", "contiguous"),
        (#"{"payload": {"kernel": "/k"}, "net": [{"ip": "10.0.0"}]}"#, "net[0].ip", "dotted IPv4"),
        (#"{"payload": {"kernel": "/k"}, "net": [{"tap": "a b"}]}"#, "net[0].tap", "not a valid interface name"),
        (#"{"payload": {"kernel": "/k"}, "serial": {"mode": "Tty"}, "console": {"mode": "Tty"}}"#, "console.mode", "terminal"),
        (#"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a", "id": "d"}], "net": [{"id": "d"}]}"#, "net[0].id", "already the id"),
        (#"{"payload": {"kernel": "/k"}, "disks": [{"path": "/a", "id": "__console"}]}"#, "disks[0].id", "reserved"),
    ])
    func unusableDevicesAreRefusedByField(text: String, field: String, fragment: String) throws {
        let config = try decode(text)
        #expect(throws: ConfigError.self) { try config.validate() }
        do {
            try config.validate()
        } catch {
            #expect(error.field == field)
            #expect(error.message.contains(fragment), "\(error)")
        }
    }

    @Test func commandLineOptionsBecomeTheSameConfig() throws {
        let options = try VmmOptions.parse(["--kernel", "/k", "--cmdline", "a b", "--cpus", "boot=2,max=3", "--memory", "size=64M",
                                            "--serial", "file=/tmp/x", "--handoff", "task", "--test-device", "off"])
        let config = options.vm
        #expect(config.payload == .init(kernel: "/k", cmdline: "a b"))
        #expect(config.bootVcpus == 2 && config.maxVcpus == 3 && config.memorySize == 64 << 20)
        #expect(config.serial == .file("/tmp/x") && config.handoff == .task && !config.testDevice)
        #expect(try VmConfig(json: config.json) == config)
    }

    @Test func apiSocketOption() throws {
        #expect(try VmmOptions.parse(["--api-socket", "path=/tmp/a.sock"]).apiSocket == .path("/tmp/a.sock"))
        #expect(try VmmOptions.parse(["--api-socket", "/tmp/b.sock"]).apiSocket == .path("/tmp/b.sock"))
        #expect(try VmmOptions.parse(["--api-socket=fd=3"]).apiSocket == .fd(3))
        #expect(try VmmOptions.parse(["--api-socket", "fd=3", "--kernel", "k"]).vm.payload.kernel == "k")
        #expect(throws: CliError("--api-socket path=/a,fd=3: give either path=PATH or fd=N")) {
            try VmmOptions.parse(["--api-socket", "path=/a,fd=3"])
        }
        #expect(throws: CliError("--api-socket fd=-1: expected an integer from 0 to 2147483647")) {
            try VmmOptions.parse(["--api-socket", "fd=-1"])
        }
        #expect(throws: CliError("--api-socket: unknown key 'port' (expected one of: fd, path)")) {
            try VmmOptions.parse(["--api-socket", "port=80"])
        }
        let long = "/tmp/" + String(repeating: "s", count: 120)
        #expect(throws: CliError("--api-socket path=\(long): longer than 107 bytes (the limit for a unix socket path)")) {
            try VmmOptions.parse(["--api-socket", "path=\(long)"])
        }
    }
}
