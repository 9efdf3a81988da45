import ActorVmm
@testable import Cli
import Testing

/// `--net` and `net[]`'s `num_queues`, `queue_size` and `offload_*` (Cloud Hypervisor's meaning): read from
/// either side into the same config, checked by `validate()`, handed to the device (docs/devices.md).
@Suite struct NetQueueOptionsTests {
    func decode(_ text: String) throws -> VmConfig { try VmConfig(json: try JsonParser.parse(Array(text.utf8))) }

    @Test func queuesAndOffloadsReachTheDeviceFromBothSides() throws {
        let cli = try VmmOptions.parse(["--kernel", "k", "--cpus", "boot=2",
                                        "--net", "tap=t,num_queues=4,queue_size=64,offload_tso=off,offload_ufo=off"]).vm
        let api = try decode(#"{"payload": {"kernel": "k"}, "cpus": {"boot_vcpus": 2, "max_vcpus": 2}, "net": [{"tap": "t", "num_queues": 4, "queue_size": 64, "offload_tso": false, "offload_ufo": false}]}"#)
        for config in [cli, api] {
            #expect(throws: Never.self) { try config.validate() }
            let options = config.net[0].backendOptions
            #expect(options.queuePairs == 2 && options.queueSize == 64)
            #expect(options.offloadChecksum && !options.offloadTso && !options.offloadUfo)
            #expect(try VmConfig(json: config.json).net[0].numQueues == 4)
        }
        // The defaults: one pair of 256 entries, every offload; none of them written back into vm.info.
        let plain = try VmmOptions.parse(["--kernel", "k", "--net", "tap=t,num_queues=,queue_size="]).vm
        let options = plain.net[0].backendOptions
        #expect(options.queuePairs == 1 && options.queueSize == 256 && options.offloadChecksum && options.offloadTso)
        guard case .array(let nets)? = plain.json["net"], case .object(let members)? = nets.first else {
            Issue.record("no net in \(plain.json)")
            return
        }
        #expect(!members.contains { $0.key.hasPrefix("offload") || $0.key.hasPrefix("num") || $0.key.hasPrefix("queue") })
    }

    @Test(arguments: [
        ("num_queues=3", "net[0].num_queues", "--net num_queues=3: expected an even number of queues from 2 to 32"),
        ("num_queues=34", "net[0].num_queues", "--net num_queues=34: expected an even number of queues from 2 to 32"),
        ("num_queues=6", "net[0].num_queues", "--net num_queues=6: 3 queue pairs for 2 vCPU(s): at most one pair per vCPU"),
        ("queue_size=100", "net[0].queue_size", "--net queue_size=100: expected a power of 2 from 2 to 256"),
        ("queue_size=512", "net[0].queue_size", "--net queue_size=512: expected a power of 2 from 2 to 256"),
    ])
    func unusableQueuesAreRefusedByOptionAndField(setting: String, field: String, message: String) throws {
        // The command line: one line naming the option (VmmOptions.parse validates).
        do {
            _ = try VmmOptions.parse(["--kernel", "k", "--cpus", "boot=2", "--net", "tap=t,\(setting)"])
            Issue.record("accepted \(setting)")
        } catch {
            #expect("\(error)".hasPrefix(message), "\(error)")
        }
        // The API: the field.
        let key = String(setting.prefix { $0 != "=" }), value = setting.drop { $0 != "=" }.dropFirst()
        let config = try decode(#"{"payload": {"kernel": "k"}, "cpus": {"boot_vcpus": 2, "max_vcpus": 2}, "net": [{"tap": "t", "\#(key)": \#(value)}]}"#)
        #expect(throws: ConfigError.self) { try config.validate() }
        do {
            try config.validate()
        } catch {
            #expect(error.field == field, "\(error)")
        }
    }

    @Test func badValuesAreOneLine() {
        #expect(throws: CliError("--net num_queues=two: expected an integer from 1 to 65535")) {
            try VmmOptions.parse(["--kernel", "k", "--net", "num_queues=two"])
        }
        #expect(throws: CliError("--net offload_csum=maybe: expected on or off")) {
            try VmmOptions.parse(["--kernel", "k", "--net", "offload_csum=maybe"])
        }
    }
}
