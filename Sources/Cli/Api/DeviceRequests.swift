/// A device for vm.add-disk or vm.add-net: Cloud Hypervisor's `DiskConfig` or `NetConfig`, read exactly as
/// an entry of vm.create's `disks` or `net` (field errors name the body's own keys: `path`, `queue_size`).
enum HotplugDevice: Equatable, Sendable {
    case disk(VmConfig.Disk)
    case net(VmConfig.Net)

    /// The id the request gives, if any.
    var id: String? {
        switch self {
        case .disk(let disk): disk.id
        case .net(let net): net.id
        }
    }

    /// "cannot add the disk": the first message of an error.
    var failure: String {
        switch self {
        case .disk: "cannot add the disk"
        case .net: "cannot add the network device"
        }
    }

    /// Cloud Hypervisor's prefix for a generated id (`_disk2`, `_net3`).
    var idPrefix: String {
        switch self {
        case .disk: "_disk"
        case .net: "_net"
        }
    }

    /// The device with its id set (the one the device manager gave it).
    func with(id: String) -> HotplugDevice {
        switch self {
        case .disk(var disk): disk.id = id; return .disk(disk)
        case .net(var net): net.id = id; return .net(net)
        }
    }

    /// Appends the device to `config` and returns its entry's field path (`disks[1]`).
    func append(to config: inout VmConfig) -> String {
        switch self {
        case .disk(let disk):
            config.disks.append(disk)
            return "disks[\(config.disks.count - 1)]"
        case .net(let net):
            config.net.append(net)
            return "net[\(config.net.count - 1)]"
        }
    }

    /// The body of `endpoint` (vm.add-disk or vm.add-net).
    init(_ endpoint: ApiEndpoint, body: [UInt8]) throws(ApiError) {
        let isDisk = endpoint == .vmAddDisk
        let failure = isDisk ? "cannot add the disk" : "cannot add the network device"
        guard !body.isEmpty else {
            throw ApiError(.badRequest, failure, "\(endpoint.rawValue) needs a JSON body, e.g. " + (isDisk ? #"{"path": "/disk.img"}"# : #"{"tap": "tap1"}"#))
        }
        do {
            let json = try JsonParser.parse(body)
            self = isDisk ? .disk(try VmConfig.decodeDisk(json, at: "")) : .net(try VmConfig.decodeNet(json, at: ""))
        } catch let error as ConfigError {
            throw ApiError(.badRequest, failure, error.description)
        } catch {
            throw ApiError(.badRequest, failure, "\(error)")
        }
    }
}

extension VmConfig {
    /// The ids the config gives its devices.
    var deviceIDs: Set<String> { Set(disks.compactMap(\.id) + net.compactMap(\.id)) }

    /// Gives the disks and net devices without an id the ones a machine booted from this config has:
    /// `ids` are its virtio devices in attachment order (disks, then net devices, then the VMM's own).
    mutating func assignIDs(_ ids: [String]) {
        guard ids.count >= disks.count + net.count else { return }
        for index in disks.indices where disks[index].id == nil { disks[index].id = ids[index] }
        for index in net.indices where net[index].id == nil { net[index].id = ids[disks.count + index] }
    }

    /// Drops the disks and net devices whose ids the running machine no longer has (`live`: its virtio
    /// devices): those the guest ejected by itself (`_EJ0` without a vm.remove-device), as Cloud
    /// Hypervisor's config forgets them; a reboot does not bring them back. Devices without an id (not
    /// booted yet) stay. Returns the ids dropped.
    @discardableResult
    mutating func dropDevices(notIn live: [String]) -> [String] {
        let present = Set(live)
        let gone = (disks.compactMap(\.id) + net.compactMap(\.id)).filter { !present.contains($0) }
        disks.removeAll { $0.id.map { !present.contains($0) } ?? false }
        net.removeAll { $0.id.map { !present.contains($0) } ?? false }
        return gone
    }

    /// Takes device `id` out of the config (vm.remove-device: a reboot does not bring it back); false if no
    /// disk or net device has that id.
    mutating func removeDevice(id: String) -> Bool {
        let before = disks.count + net.count
        disks.removeAll { $0.id == id }
        net.removeAll { $0.id == id }
        return disks.count + net.count != before
    }
}

/// The body of vm.remove-device (Cloud Hypervisor's `VmRemoveDevice`): `{"id": "_disk0"}`.
struct RemoveDeviceRequest: Equatable, Sendable {
    let id: String

    static let failure = "cannot remove the device"

    init(id: String) { self.id = id }

    init(body: [UInt8]) throws(ApiError) {
        guard !body.isEmpty else { throw ApiError(.badRequest, Self.failure, #"vm.remove-device needs a JSON body, e.g. {"id": "_disk0"}"#) }
        do {
            var reader = try ObjectReader(try JsonParser.parse(body), at: "")
            guard let id = try reader.nonEmptyString("id") else { throw reader.missing("id") }
            try reader.finish()
            self.id = id
        } catch let error as ConfigError {
            throw ApiError(.badRequest, Self.failure, error.description)
        } catch {
            throw ApiError(.badRequest, Self.failure, "\(error)")
        }
    }
}
