import ActorVmm
import Devices
import Glibc

/// `--net tap=NAME,mac=MAC,ip=IP,mask=MASK,num_queues=N,queue_size=M,offload_csum=on|off,offload_tso=on|off,
/// offload_ufo=on|off,id=ID`, parsed, with Cloud Hypervisor's meaning of each key:
/// an empty or absent value is the default. No `tap`: the VMM creates one (`vmtap%d`); no `mac`: a random
/// locally administered address, chosen here so that it stays the same across reboots; no `ip`/`mask`: Cloud
/// Hypervisor's defaults on a TAP the VMM creates (``TapDevice``). The values are checked by
/// ``VmConfig/validate()``, as the API's are.
func parseNet(_ text: String) throws(CliError) -> VmConfig.Net {
    let list = try KeyValueList(option: "--net", text: text, allowedKeys: [
        "tap", "mac", "ip", "mask", "id", "num_queues", "queue_size", "offload_csum", "offload_tso", "offload_ufo",
    ])
    func value(_ key: String) -> String? { list[key].flatMap { $0.isEmpty ? nil : $0 } }
    var mac = formatMac(randomLocalMac())
    if let text = value("mac") {
        guard parseMac(text) != nil else { throw CliError("--net mac=\(text): expected six hex bytes like 52:54:00:12:34:56") }
        mac = text
    }
    var net = VmConfig.Net(tap: value("tap"), mac: mac, ip: value("ip"), mask: value("mask"), id: value("id"))
    if value("num_queues") != nil { net.numQueues = try list.integer("num_queues", in: 1...65535) ?? net.numQueues }
    if value("queue_size") != nil { net.queueSize = try list.integer("queue_size", in: 1...65535) ?? net.queueSize }
    if value("offload_csum") != nil { net.offloadCsum = try list.bool("offload_csum") ?? true }
    if value("offload_tso") != nil { net.offloadTso = try list.bool("offload_tso") ?? true }
    if value("offload_ufo") != nil { net.offloadUfo = try list.bool("offload_ufo") ?? true }
    return net
}

extension VmConfig.Net {
    /// The backend's options (``VmConfig/validate()`` has passed: names and addresses are well-formed); no
    /// MAC (from the API): a random one, new at each boot.
    var backendOptions: VirtioNet.Options {
        VirtioNet.Options(tap: tap, mac: mac.flatMap(parseMac) ?? randomLocalMac(), address: ip.flatMap(parseIPv4),
                           netmask: mask.flatMap(parseIPv4), id: id, queuePairs: numQueues / 2,
                           queueSize: UInt16(clamping: queueSize), offloadChecksum: offloadCsum, offloadTso: offloadTso,
                           offloadUfo: offloadUfo)
    }
}

/// Why `name` cannot name a TAP interface, or nil.
func tapNameProblem(_ name: String) -> String? {
    if name.utf8.count > TapDevice.maxNameLength { return "interface names have at most \(TapDevice.maxNameLength) bytes" }
    if name.contains("/") || name.contains(where: \.isWhitespace) || name == "." || name == ".." {
        return "not a valid interface name (no '/', spaces, '.' or '..')"
    }
    return nil
}

/// Why `text` is not a usable IPv4 address (or, with `isMask`, netmask), or nil.
func ipv4Problem(_ text: String, isMask: Bool) -> String? {
    guard let address = parseIPv4(text) else { return "expected a dotted IPv4 address" }
    let bits = UInt32(bigEndian: address)
    if isMask, (~bits) & (~bits &+ 1) != 0 {
        return "not a contiguous netmask (ones, then zeros: 255.255.255.0)"
    }
    return nil
}

/// `--disk path=FILE,readonly=on,direct=on,id=ID`, parsed (the id is checked by ``VmConfig/validate()``).
func parseDisk(_ text: String) throws(CliError) -> VmConfig.Disk {
    let list = try KeyValueList(option: "--disk", text: text,
                                allowedKeys: ["path", "readonly", "direct", "id", "num_queues", "queue_size"])
    guard let path = list["path"], !path.isEmpty else { throw CliError("--disk \(text): expected path=FILE") }
    var disk = VmConfig.Disk(path: path, readonly: try list.bool("readonly") ?? false,
                             direct: try list.bool("direct") ?? false, id: list["id"])
    disk.numQueues = try list.integer("num_queues", in: 1...VirtioBlock.maxQueues) ?? disk.numQueues
    disk.queueSize = try list.integer("queue_size", in: 2...Int(SplitQueue.maxSize)) ?? disk.queueSize
    if let problem = VirtioBlock.problem(with: disk.backendOptions) { throw CliError("--disk \(text): \(problem)") }
    return disk
}

extension VmConfig.Disk {
    /// The most queues, and the queue sizes, a disk may have (``VirtioBlock/problem(with:)``).
    static let maxQueues = VirtioBlock.maxQueues
    static let validQueueSizes = Set((1...8).map { 1 << $0 })  // 2 … 256

    var backendOptions: VirtioBlock.Options {
        VirtioBlock.Options(path: path, readonly: readonly, direct: direct, id: id, numQueues: numQueues,
                             queueSize: UInt16(clamping: queueSize))
    }
}

/// `--rng src=PATH` (the value is optional: `--rng` alone uses /dev/urandom).
func parseRng(_ text: String?) throws(CliError) -> String {
    guard let text else { return "/dev/urandom" }
    let list = try KeyValueList(option: "--rng", text: text, allowedKeys: ["src"])
    guard let path = list["src"], !path.isEmpty else { throw CliError("--rng \(text): expected src=PATH") }
    return path
}

/// Where device actors run: all on one loop, one loop per virtio device, or one per virtio device and one
/// per virtio-blk queue and virtio-net queue pair (their queue workers).
enum Placement: String, Equatable, Sendable {
    case shared
    case perDevice = "per-device"
    case perQueue = "per-queue"
}

func parseMac(_ text: String) -> [UInt8]? {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 6 else { return nil }
    var bytes: [UInt8] = []
    for part in parts {
        guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
        bytes.append(byte)
    }
    return bytes
}

/// An IPv4 address in network byte order.
func parseIPv4(_ text: String) -> UInt32? {
    var address = in_addr()
    return inet_pton(AF_INET, text, &address) == 1 ? address.s_addr : nil
}

/// `52:54:00:12:34:56`.
func formatMac(_ bytes: [UInt8]) -> String {
    bytes.map { byte in
        let text = String(byte, radix: 16)
        return text.count == 1 ? "0" + text : text
    }.joined(separator: ":")
}

/// A random locally administered unicast MAC (as Cloud Hypervisor makes when none is given).
func randomLocalMac() -> [UInt8] {
    var bytes = (0..<6).map { _ in UInt8.random(in: 0...255) }
    bytes[0] = (bytes[0] & 0xFE) | 0x02
    return bytes
}

/// `--compat`: whether to turn on the host compatibility mode (docs/compat.md).
enum CompatMode: String, Equatable {
    case auto, on, off

    /// What to run with on this host.
    func resolve() -> HostCompatibility {
        switch self {
        case .auto: HostCompatibility.detected()
        case .on: HostCompatibility(isNeeded: true)
        case .off: HostCompatibility(isNeeded: false)
        }
    }
}
