import ActorVmm
@testable import Cli
import Testing

/// vm.add-disk, vm.add-net and vm.remove-device through the real router and controller over the fake
/// backend (no KVM): bodies, validation as at vm.create, ids, cold and hot adds, and what vm.info says.
@Suite struct DeviceHotplugApiTests {
    static let config = #"{"payload": {"kernel": "/k"}, "disks": [{"path": "/d0"}]}"#

    /// The error body as one line.
    func message(_ response: HttpClient.Response) -> String { RemoteCommand.describeError(response.body) }

    @Test func hotAddAnswersPciDeviceInfoAndVmInfoKeepsTheDevice() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        #expect(try api.request("PUT", "vm.add-disk", body: #"{"path": "/d1"}"#).status == 404, "no VM")
        #expect(try api.request("PUT", "vm.create", body: Self.config).status == 204)
        #expect(try api.request("PUT", "vm.boot").status == 204)

        let added = try api.request("PUT", "vm.add-disk", body: #"{"path": "/d1", "id": "data"}"#)
        #expect(added.status == 200)
        #expect(added.json == .object(["id": .string("data"), "bdf": .string("0000:00:05.0")]))
        let net = try api.request("PUT", "vm.add-net", body: #"{"tap": "tap9"}"#)
        #expect(net.status == 200 && net.json?["id"] == .string("_net1") && net.json?["bdf"] == .string("0000:00:06.0"))
        let disks = try api.request("GET", "vm.info").json?["config"]?["disks"]
        #expect(disks == .array([.object(["path": .string("/d0"), "readonly": .bool(false), "direct": .bool(false), "num_queues": .int(1), "queue_size": .int(128), "id": .string("_disk0")]),
                                 .object(["path": .string("/d1"), "readonly": .bool(false), "direct": .bool(false), "num_queues": .int(1), "queue_size": .int(128), "id": .string("data")])]),
                "\(String(describing: disks))")
        let info = try api.request("GET", "vm.info")
        #expect(info.json?["config"]?["net"]?.arrayCount == 1, "\(String(decoding: info.body, as: UTF8.self))")

        #expect(try api.request("PUT", "vm.remove-device", body: #"{"id": "data"}"#).status == 204)
        #expect(try api.request("GET", "vm.info").json?["config"]?["disks"]?.arrayCount == 1, "the config no longer has it")
        let unknown = try api.request("PUT", "vm.remove-device", body: #"{"id": "nope"}"#)
        #expect(unknown.status == 404 && message(unknown) == "cannot remove the device: no device with id nope")
        #expect(api.backend.events.filter { $0.contains("device") } == ["add-device data", "add-device _net1", "remove-device data"])
        #expect(try api.request("PUT", "vm.pause").status == 204)
        #expect(try api.request("PUT", "vm.add-disk", body: #"{"path": "/d2"}"#).status == 405, "paused")
    }

    @Test func badInputIsOneLineNamingTheFieldAndChangesNothing() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        #expect(try api.request("PUT", "vm.create", body: Self.config).status == 204)
        #expect(try api.request("PUT", "vm.boot").status == 204)
        let cases: [(endpoint: String, body: String?, status: Int, message: String)] = [
            ("vm.add-disk", nil, 400, #"cannot add the disk: vm.add-disk needs a JSON body, e.g. {"path": "/disk.img"}"#),
            ("vm.add-disk", #"{"readonly": true}"#, 400, "cannot add the disk: path: missing (required)"),
            ("vm.add-disk", #"{"path": "/d", "queue_size": 3}"#, 400, "cannot add the disk: queue_size: 3 is not supported by actor-vmm (queues offer a power of 2 from 2 to 256 entries)"),
            ("vm.add-disk", #"{"path": "/d", "colour": 1}"#, 400, "cannot add the disk: colour: unknown field"),
            ("vm.add-disk", #"{"path": "/d", "id": "__mine"}"#, 400, "cannot add the disk: id: ids starting with __ are reserved for the VMM's own devices"),
            ("vm.add-disk", #"{"path": "/missing-disk"}"#, 400, "cannot add the disk: path: /missing-disk: No such file or directory"),
            ("vm.add-net", #"{"tap": "a/b"}"#, 400, "cannot add the network device: tap: not a valid interface name (no '/', spaces, '.' or '..')"),
            ("vm.add-net", #"{"num_queues": 4}"#, 400, "cannot add the network device: num_queues: 2 queue pairs for 1 vCPU(s): at most one pair per vCPU"),
            ("vm.remove-device", "{}", 400, "cannot remove the device: id: missing (required)"),
        ]
        for (endpoint, body, status, text) in cases {
            let response = try api.request("PUT", endpoint, body: body)
            #expect(response.status == status && message(response) == text, "\(endpoint) \(body ?? ""): \(message(response))")
        }
        #expect(api.backend.events.filter { $0.contains("device") }.isEmpty, "nothing reached the VM")
        #expect(try api.request("GET", "vm.info").json?["config"]?["disks"]?.arrayCount == 1)
    }

    @Test func idsAreUniqueAcrossConfigAndMachine() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        #expect(try api.request("PUT", "vm.create", body: #"{"payload": {"kernel": "/k"}, "disks": [{"path": "/d0", "id": "root"}]}"#).status == 204)
        #expect(try api.request("PUT", "vm.boot").status == 204)
        let duplicate = try api.request("PUT", "vm.add-disk", body: #"{"path": "/d1", "id": "root"}"#)
        #expect(duplicate.status == 409 && message(duplicate) == "cannot add the disk: id root is already the id of another device")
        let onMachine = try api.request("PUT", "vm.add-net", body: #"{"id": "fake"}"#)  // the fake machine's tree has "fake"
        #expect(onMachine.status == 409)
    }

    /// Before boot (and after a shutdown) the config alone changes: 204, as Cloud Hypervisor's cold add.
    @Test func coldAddAndRemoveChangeTheConfig() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        #expect(try api.request("PUT", "vm.create", body: Self.config).status == 204)
        #expect(try api.request("PUT", "vm.add-disk", body: #"{"path": "/d1", "id": "cold"}"#).status == 204)
        #expect(try api.request("PUT", "vm.add-disk", body: #"{"path": "/missing-disk"}"#).status == 400, "opened at once")
        #expect(try api.request("GET", "vm.info").json?["config"]?["disks"]?.arrayCount == 2)
        #expect(try api.request("PUT", "vm.remove-device", body: #"{"id": "cold"}"#).status == 204)
        #expect(try api.request("PUT", "vm.remove-device", body: #"{"id": "cold"}"#).status == 404)
        #expect(try api.request("GET", "vm.info").json?["config"]?["disks"]?.arrayCount == 1)
        #expect(!api.backend.events.contains { $0.contains("device") }, "no machine yet")
    }

    /// The ids the machine generated at boot go into the config (as Cloud Hypervisor's), so a boot device
    /// can be removed by its generated id and a reboot does not bring it back.
    @Test func bootDevicesGetTheirGeneratedIdsInTheConfig() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        #expect(try api.request("PUT", "vm.create", body: #"{"payload": {"kernel": "/k"}, "disks": [{"path": "/d0"}, {"path": "/d1", "id": "data"}], "net": [{"tap": "t0"}]}"#).status == 204)
        #expect(try api.request("GET", "vm.info").json?["config"]?["disks"]?.arrayCount == 2)
        #expect(try api.request("PUT", "vm.boot").status == 204)
        let config = try api.request("GET", "vm.info").json?["config"]
        #expect(config?["disks"] == .array([
            .object(["path": .string("/d0"), "readonly": .bool(false), "direct": .bool(false), "num_queues": .int(1), "queue_size": .int(128), "id": .string("_disk0")]),
            .object(["path": .string("/d1"), "readonly": .bool(false), "direct": .bool(false), "num_queues": .int(1), "queue_size": .int(128), "id": .string("data")]),
        ]), "\(String(describing: config))")
        #expect(config?["net"] == .array([.object(["tap": .string("t0"), "id": .string("_net2")])]), "\(String(describing: config))")
        #expect(try api.request("PUT", "vm.remove-device", body: #"{"id": "_disk0"}"#).status == 204)
        #expect(try api.request("GET", "vm.info").json?["config"]?["disks"]?.arrayCount == 1, "a reboot will not have it")
    }

    /// A device the guest ejects by itself (`_EJ0` with no vm.remove-device: Linux's
    /// `echo 0 > /sys/bus/pci/slots/N/power`) leaves the config too, as in Cloud Hypervisor: vm.info stops
    /// showing it and a reboot does not bring it back.
    @Test func aDeviceTheGuestEjectsLeavesTheConfig() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        #expect(try api.request("PUT", "vm.create", body: #"{"payload": {"kernel": "/k"}, "disks": [{"path": "/d0"}, {"path": "/d1", "id": "data"}]}"#).status == 204)
        #expect(try api.request("PUT", "vm.boot").status == 204)
        #expect(try api.request("PUT", "vm.add-net", body: #"{"tap": "tap9", "id": "hot"}"#).status == 200)
        // The guest ejects "data" (the machine detached it); the hot-added NIC stays.
        api.backend.lastInstance?.virtioIDs.withLock { $0.removeAll { $0 == "data" } }
        func ids(_ list: JsonValue?) -> [JsonValue?] {
            guard case .array(let items)? = list else { return [] }
            return items.map { $0["id"] }
        }
        let config = try api.request("GET", "vm.info").json?["config"]
        #expect(ids(config?["disks"]) == [.string("_disk0")], "\(String(describing: config))")
        #expect(ids(config?["net"]) == [.string("hot")], "\(String(describing: config))")
        #expect(try api.request("PUT", "vm.reboot").status == 204)
        #expect(api.backend.lastInstance?.virtioDeviceIDs == ["_disk0", "hot"], "the reboot has the devices the guest kept")
    }

    @Test func remoteBuildsCloudHypervisorsBodies() {
        func body(_ endpoint: ApiEndpoint, _ argument: String) -> String? {
            try? RemoteCommand.deviceBody(endpoint, argument).map { String(decoding: $0, as: UTF8.self) }.get()
        }
        #expect(body(.vmAddDisk, "path=/img,readonly=on,id=data")
                == #"{"path":"/img","readonly":true,"direct":false,"num_queues":1,"queue_size":128,"id":"data"}"#)
        #expect(body(.vmAddNet, "tap=tap1,mac=52:54:00:00:00:01") == #"{"tap":"tap1","mac":"52:54:00:00:00:01"}"#)
        #expect(body(.vmRemoveDevice, "_disk1") == #"{"id":"_disk1"}"#)
        #expect(body(.vmAddDisk, "readonly=on") == nil && body(.vmAddDisk, "path=/x,size=2") == nil && body(.vmRemoveDevice, "") == nil)
    }
}

extension JsonValue {
    /// The number of elements of an array (nil for anything else).
    var arrayCount: Int? {
        if case .array(let items) = self { items.count } else { nil }
    }
}
