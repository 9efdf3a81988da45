import ActorVmm
@testable import Cli
import Testing

/// `--memory …,hotplug_method=virtio-mem` and the API's `memory.hotplug_method: "VirtioMem"` (Cloud
/// Hypervisor's spellings), checked by the one `VmConfig.validate()`; vm.resize's sizes for virtio-mem.
@Suite struct VirtioMemConfigTests {
    func parse(_ memory: String) throws -> VmConfig { try VmmOptions.parse(["--kernel", "k", "--memory", memory]).vm }

    func json(_ memory: String) throws -> VmConfig {
        let config = try VmConfig(json: try JsonParser.parse(Array("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\(memory)}}".utf8)))
        try config.validate()
        return config
    }

    @Test func bothSpellingsGiveTheSameConfig() throws {
        let cli = try parse("size=512M,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=256M")
        #expect(cli.hotplugMethod == .virtioMem && cli.hotplugSize == 1 << 30 && cli.hotpluggedSize == 256 << 20)
        #expect(cli.virtioMemSize == 1 << 30 && cli.acpiHotplugSize == 0)
        let api = try json(#""size": 536870912, "hotplug_method": "VirtioMem", "hotplug_size": 1073741824, "hotplugged_size": 268435456"#)
        #expect(api.hotplugMethod == cli.hotplugMethod && api.hotplugSize == cli.hotplugSize && api.hotpluggedSize == cli.hotpluggedSize)
        // vm.info writes it back in Cloud Hypervisor's form, and reading that gives the same config.
        let memory = api.json["memory"]
        #expect(memory?["hotplug_method"] == .string("VirtioMem") && memory?["hotplugged_size"] == .int(256 << 20))
        #expect(try VmConfig(json: api.json) == api)
        // ACPI stays the default, and virtio-mem without hotplug_size has no device (as Cloud Hypervisor).
        #expect(try parse("size=512M,hotplug_size=1G").acpiHotplugSize == 1 << 30)
        #expect(try parse("size=512M,hotplug_method=virtio-mem").virtioMemSize == nil)
        #expect(try json(#""size": 536870912, "hotplug_method": "Acpi""#).json["memory"]?["hotplug_method"] == nil)
    }

    /// One error per problem, naming the option on the command line and the field in JSON.
    @Test(arguments: [
        ("size=512M,hotplug_method=virtio-mem,hotplug_size=100M", "--memory hotplug_size=100M: must be a multiple of 128 MiB (134217728)",
         #""size": 536870912, "hotplug_method": "VirtioMem", "hotplug_size": 104857600"#, "memory.hotplug_size: must be a multiple of 128 MiB (134217728)"),
        ("size=512M,hotplug_size=1G,hotplugged_size=128M", "--memory hotplugged_size=128M: needs hotplug_method virtio-mem (VirtioMem)",
         #""size": 536870912, "hotplug_size": 1073741824, "hotplugged_size": 134217728"#, "memory.hotplugged_size: needs hotplug_method virtio-mem (VirtioMem)"),
        ("size=512M,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=2G", "--memory hotplugged_size=2G: must be at most hotplug_size (1073741824)",
         #""size": 536870912, "hotplug_method": "VirtioMem", "hotplug_size": 1073741824, "hotplugged_size": 2147483648"#,
         "memory.hotplugged_size: must be at most hotplug_size (1073741824)"),
        ("size=512M,hotplug_method=virtio-mem,hotplugged_size=2M", "--memory hotplugged_size=2M: must be at most hotplug_size (0)",
         #""size": 536870912, "hotplug_method": "VirtioMem", "hotplugged_size": 2097152"#, "memory.hotplugged_size: must be at most hotplug_size (0)"),
        ("size=512M,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=3M",
         "--memory hotplugged_size=3M: must be a multiple of the virtio-mem block size, 2 MiB (2097152)",
         #""size": 536870912, "hotplug_method": "VirtioMem", "hotplug_size": 1073741824, "hotplugged_size": 3145728"#,
         "memory.hotplugged_size: must be a multiple of the virtio-mem block size, 2 MiB (2097152)"),
    ])
    func badSettings(cli: String, cliMessage: String, api: String, apiMessage: String) {
        #expect(throws: CliError(cliMessage)) { try parse(cli) }
        #expect(throws: ConfigError.self) { try json(api) }
        #expect((try? json(api)) == nil)
        do {
            _ = try json(api)
        } catch let error as ConfigError {
            #expect(error.description == apiMessage)
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func badSpellings() {
        #expect(throws: CliError("--memory hotplug_method=virtio_mem: expected acpi or virtio-mem")) { try parse("size=512M,hotplug_method=virtio_mem") }
        #expect(throws: CliError("--memory hotplugged_size=lots: expected a size such as 512M or 1G")) { try parse("size=512M,hotplugged_size=lots") }
        #expect(throws: CliError("--memory hotplug_size=65664G: must be at most 64 TiB (70368744177664)")) {
            try parse("size=512M,hotplug_method=virtio-mem,hotplug_size=65664G")
        }
        #expect(throws: ConfigError(field: "memory.hotplug_method", #"expected "Acpi" or "VirtioMem", not "virtio-mem""#)) {
            try json(#""size": 536870912, "hotplug_method": "virtio-mem""#)
        }
        #expect(throws: ConfigError.self) { try json(#""size": 536870912, "hotplugged_size": -1"#) }
        let why = "the virtio-mem region ends at 0x140000000, beyond the 32 address bits of cpus.max_phys_bits"
        #expect(throws: ConfigError(field: "memory.hotplug_size", why, cli: "--memory hotplug_size=1G: \(why)")) {
            let config = try VmConfig(json: try JsonParser.parse(Array(#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 32}, "memory": {"size": 536870912, "hotplug_method": "VirtioMem", "hotplug_size": 1073741824}}"#.utf8)))
            try config.validate()
        }
    }

    /// vm.resize's desired_ram with virtio-mem: boot RAM up to boot RAM + hotplug_size, in 2 MiB steps.
    @Test func resizeSizes() throws {
        let boot: UInt64 = 512 << 20, region: UInt64 = 1 << 30
        func requested(_ desired: UInt64) throws -> UInt64 { try VirtioMemHotplug.requestedSize(for: desired, bootRam: boot, regionSize: region) }
        #expect(try requested(boot) == 0)
        #expect(try requested(boot + (2 << 20)) == 2 << 20)
        #expect(try requested(boot + region) == region)
        for (bad, words) in [(boot - (2 << 20), "below the boot RAM"), (boot + region + (2 << 20), "beyond memory.size + hotplug_size"),
                             (boot + (1 << 20), "multiple of the virtio-mem block size")] {
            do {
                _ = try requested(bad)
                Issue.record("\(bad) accepted")
            } catch let error as MemoryHotplug.ResizeError {
                #expect(error.refused && error.message.contains(words) && error.message.hasPrefix("desired_ram \(bad): "), "\(error)")
            }
        }
    }

    /// The controller keeps `hotplugged_size` up to date (a reboot asks for the same size, as Cloud Hypervisor).
    @Test func resizeUpdatesHotpluggedSize() async throws {
        let f = try ControllerTests.Fixture()
        defer { f.loop.shutdown() }
        var config = VmConfig(payload: .init(kernel: "/k"))
        config.hotplugMethod = .virtioMem
        config.hotplugSize = 1 << 30
        try await f.controller.create(config)
        try await f.controller.boot()
        try await f.controller.resize(ResizeRequest(ram: (512 + 256) << 20))
        #expect(try await f.controller.info().config.hotpluggedSize == 256 << 20)
        try await f.controller.resize(ResizeRequest(ram: 512 << 20))
        #expect(try await f.controller.info().config.hotpluggedSize == 0)
        #expect(try await f.controller.info().memoryActualSize == 512 << 20, "the fake backend plugged nothing")
    }
}
