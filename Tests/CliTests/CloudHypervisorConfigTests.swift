import ActorVmm
import CKvm
@testable import Cli
import Foundation
import Testing

/// A config written by Cloud Hypervisor itself, every default spelled out, is accepted; values that ask for
/// what ActorVMM does not do are refused by field and value; `rate_limiter_config` is checked in full.
@Suite struct CloudHypervisorConfigTests {
    static let fixture: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/cloud-hypervisor-vm-config.json")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    func decode(_ text: String) throws(ConfigError) -> VmConfig {
        let json: JsonValue
        do {
            json = try JsonParser.parse(Array(text.utf8))
        } catch {
            Issue.record("invalid JSON: \(error)")
            return VmConfig(payload: .init(kernel: ""))
        }
        return try VmConfig(json: json)
    }

    @Test func everyDefaultSpelledOutIsAccepted() throws {
        #expect(!Self.fixture.isEmpty)
        let config = try decode(Self.fixture)
        try config.validate()
        #expect(config.bootVcpus == 2 && config.maxVcpus == 2 && config.memorySize == 512 << 20)
        #expect(config.maxPhysBits == 46 && config.transparentHugePages)
        #expect(config.disks == [.init(path: "@DISK@", readonly: false, direct: false, id: "_disk0")])
        #expect(config.net.count == 1 && config.net[0].tap == "chtap0")
        #expect(config.rng == .init(source: "/dev/urandom"))
        #expect(config.serial == .null && config.console == .tty)
        #expect(try VmConfig(json: config.json) == config, "vm.info reads back")
    }

    /// The fixture with the member at `path` ("disks.0.num_queues": keys, and array indexes) set to the JSON
    /// text `value`.
    func fixture(setting path: String, to value: String) throws -> String {
        let root = try JSONSerialization.jsonObject(with: Data(Self.fixture.utf8))
        let newValue = try JSONSerialization.jsonObject(with: Data(value.utf8), options: [.fragmentsAllowed])
        func set(_ container: Any, _ keys: ArraySlice<Substring>) -> Any {
            guard let key = keys.first else { return newValue }
            if let index = Int(key), var array = container as? [Any] {
                array[index] = set(array[index], keys.dropFirst())
                return array
            }
            var object = container as? [String: Any] ?? [:]
            object[String(key)] = set(object[String(key)] as Any, keys.dropFirst())
            return object
        }
        let changed = set(root, path.split(separator: ".")[...])
        return String(decoding: try JSONSerialization.data(withJSONObject: changed), as: UTF8.self)
    }

    /// Values that ask for what ActorVMM does not do: refused, naming the field and the value.
    @Test(arguments: [
        ("cpus.topology.threads_per_core", "2", "cpus.topology", "2:2:1:1 is not supported by actor-vmm"),
        ("cpus.features.amx", "true", "cpus.features.amx", "true is not supported by actor-vmm"),
        ("cpus.core_scheduling", #""Vcpu""#, "cpus.core_scheduling", #""Vcpu" is not supported by actor-vmm"#),
        ("cpus.kvm_hyperv", "true", "cpus.kvm_hyperv", "true is not supported by actor-vmm (no Hyper-V enlightenments)"),
        ("cpus.max_phys_bits", "20", "cpus.max_phys_bits", "expected an integer from 32 to 255"),
        ("memory.hugepages", "true", "memory.hugepages", "true is not supported by actor-vmm"),
        ("disks.0.num_queues", "100", "disks[0].num_queues", "100 is not supported by actor-vmm (at most 64 queues)"),
        ("disks.0.queue_size", "100", "disks[0].queue_size", "100 is not supported by actor-vmm (queues offer a power of 2"),
        ("disks.0.queue_size", "1024", "disks[0].queue_size", "1024 is not supported by actor-vmm"),
        ("disks.0.vhost_user", "true", "disks[0].vhost_user", "true is not supported by actor-vmm"),
        ("disks.0.image_type", #""Qcow2""#, "disks[0].image_type", #""Qcow2" is not supported by actor-vmm (images are read as raw)"#),
        ("disks.0.sparse", "false", "disks[0].sparse", "false is not supported by actor-vmm"),
        ("disks.0.pci_segment", "1", "disks[0].pci_segment", "1 is not supported by actor-vmm"),
        ("disks.0.iommu", "true", "disks[0].iommu", "true is not supported by actor-vmm (there is no IOMMU)"),
        ("net.0.num_queues", "512", "net[0].num_queues", "expected an integer from 1 to 256"),
        ("net.0.mtu", "9000", "net[0].mtu", "9000 is not supported by actor-vmm (the MTU is 1500)"),
        ("net.0.vhost_user", "true", "net[0].vhost_user", "true is not supported by actor-vmm"),
        ("rng.pci_device_id", "3", "rng.pci_device_id", "3 is not supported by actor-vmm (PCI slots are given in order)"),
        ("console.pci_segment", "2", "console.pci_segment", "2 is not supported by actor-vmm"),
        ("debug_console.mode", #""Tty""#, "debug_console.mode", #""Tty" is not supported by actor-vmm"#),
        ("platform.num_pci_segments", "2", "platform.num_pci_segments", "2 is not supported by actor-vmm"),
        ("platform.uuid", #""1b4e28ba-2fa1-11d2-883f-0016d3cca427""#, "platform.uuid", "is not supported by actor-vmm (there are no SMBIOS tables)"),
        ("platform.tdx", "true", "platform.tdx", "true is not supported by actor-vmm"),
        ("platform.bogus", "1", "platform.bogus", "unknown field"),
    ] as [(String, String, String, String)])
    func nonDefaultsAreRefusedByFieldAndValue(path: String, value: String, field: String, message: String) throws {
        let text = try fixture(setting: path, to: value)
        do {
            _ = try decode(text)
            Issue.record("accepted \(path) = \(value)")
        } catch {
            #expect(error.field == field, "\(error)")
            #expect(error.message.contains(message), "\(error)")
        }
    }

    /// `rate_limiter_config` is read in full: unknown keys and wrong types are refused where they are; a
    /// bucket that limits nothing (size or refill_time 0) is accepted, one that limits is refused.
    @Test(arguments: [
        (#"{"bandwidth": {"size": 0, "refill_time": 0}, "ops": {"size": 100, "one_time_burst": 5, "refill_time": 0}}"#, nil, nil),
        (#"{"bandwith": {"size": 1, "refill_time": 1}}"#, "disks[0].rate_limiter_config.bandwith", "unknown field"),
        (#"{"bandwidth": {"size": "1M", "refill_time": 1}}"#, "disks[0].rate_limiter_config.bandwidth.size", "expected an integer, got a string"),
        (#"{"bandwidth": {"size": -1, "refill_time": 1}}"#, "disks[0].rate_limiter_config.bandwidth.size", "expected an integer from 0"),
        (#"{"ops": {"size": 1, "refill_time": 1, "burst": 2}}"#, "disks[0].rate_limiter_config.ops.burst", "unknown field"),
        (#"{"ops": {"size": 1}}"#, "disks[0].rate_limiter_config.ops.refill_time", "missing (required)"),
        (#"{"ops": []}"#, "disks[0].rate_limiter_config.ops", "expected an object, got an array"),
        (#"[]"#, "disks[0].rate_limiter_config", "expected an object, got an array"),
        (#"{"bandwidth": {"size": 1048576, "refill_time": 1000}}"#, "disks[0].rate_limiter_config.bandwidth",
         "a limit of 1048576 every 1000 ms is not supported by actor-vmm"),
    ] as [(String, String?, String?)])
    func rateLimiterConfigIsCheckedInFull(limiter: String, field: String?, message: String?) throws {
        let text = #"{"payload": {"kernel": "/k"}, "disks": [{"path": "/d", "rate_limiter_config": \#(limiter)}]}"#
        let netText = #"{"payload": {"kernel": "/k"}, "net": [{"tap": "t", "rate_limiter_config": \#(limiter)}]}"#
        do {
            _ = try decode(text)
            _ = try decode(netText)
            #expect(field == nil, "accepted \(limiter)")
        } catch {
            #expect(error.field == field, "\(error)")
            #expect(message.map { error.message.contains($0) } ?? false, "\(error)")
        }
    }

    /// `max_phys_bits` narrows the guest's physical address width as Cloud Hypervisor does: min(host, bits).
    @Test func maxPhysBitsLimitsTheAddressWidth() {
        var leaf = kvm_cpuid_entry2()
        leaf.function = 0x8000_0008
        leaf.eax = 0x3027  // 48 linear bits, 39 physical bits
        #expect(MemoryOptions.limitPhysicalAddressBits([leaf], to: 36)[0].eax == 0x3024)
        #expect(MemoryOptions.limitPhysicalAddressBits([leaf], to: 46)[0].eax == 0x3027, "the host's is smaller")
        #expect(MemoryOptions.limitPhysicalAddressBits([leaf], to: nil)[0].eax == 0x3027)
    }
}
