import ActorVmm
import Devices

/// Everything needed to create a VM, with each value's syntax and range already checked. Built from the
/// command line (``init(options:)``) or from the JSON body of `vm.create` (``init(json:)``); the lifecycle
/// keeps it to boot (and reboot) the VM, `vm.info` reports it, and `Machine.build` takes it.
///
/// Facts about the host (the kernel file is a loadable ELF, the memory exists, the serial file can be
/// opened) are checked by ``Payload/prepare(_:)``, still before any VM exists.
struct VmConfig: Equatable, Sendable {
    struct Payload: Equatable, Sendable {
        var kernel: String
        var cmdline = ""
        var initramfs: String?
    }

    /// A virtio-block disk (`disks[]`, `--disk`).
    struct Disk: Equatable, Sendable {
        var path: String
        var readonly = false
        /// `--disk direct=on` (O_DIRECT); not in the API's schema.
        var direct = false
        var id: String?
    }

    /// A virtio-net device (`net[]`, `--net`) on a TAP interface: the one named, or (no `tap`) one the VMM
    /// creates; `ip`/`mask` absent mean Cloud Hypervisor's defaults where the VMM configures the TAP.
    struct Net: Equatable, Sendable {
        var tap: String?
        var mac: String?
        var ip: String?
        var mask: String?
        var id: String?
    }

    /// A virtio-rng device (`rng`, `--rng`).
    struct Rng: Equatable, Sendable {
        var source: String
    }

    var payload: Payload
    var bootVcpus = 1
    var maxVcpus = 1
    var memorySize: UInt64 = 512 << 20
    /// `cpus.max_phys_bits`: the guest's physical address width is the host's or this, whichever is smaller
    /// (nil: the host's; Cloud Hypervisor's default, 46, is the host's on most machines).
    var maxPhysBits: Int?
    /// `memory.thp`: guest RAM is advised to use transparent huge pages (`MADV_HUGEPAGE`), as Cloud
    /// Hypervisor does by default.
    var transparentHugePages = true
    /// Cloud Hypervisor's default for the API is a null serial port; the command line defaults to tty.
    var serial = ConsoleMode.null
    var console = ConsoleMode.off
    var disks: [Disk] = []
    var net: [Net] = []
    var rng: Rng?
    /// ActorVMM's own settings (`actor_vmm` in the JSON; placement and compat only from the command line).
    var handoff = HandoffStrategy.inlineIfIdle
    var testDevice = true
    var placement = Placement.shared
    var compat = CompatMode.auto

    static let maxVcpuCount = 254
    static let minMemory: UInt64 = 4 << 20
    static let maxCmdlineLength = 2047

    init(payload: Payload) { self.payload = payload }

    /// Builds the config for a VM given on the command line (which has a kernel).
    init(options: VmmOptions) {
        payload = Payload(kernel: options.kernel ?? "", cmdline: options.cmdline, initramfs: options.initramfs)
        bootVcpus = options.bootVcpus
        maxVcpus = options.maxVcpus
        memorySize = options.memorySize
        serial = options.serial
        console = options.console
        disks = options.disks.map { Disk(path: $0.path, readonly: $0.readonly, direct: $0.direct, id: $0.id) }
        net = options.nets.map { net in
            Net(tap: net.tap, mac: net.mac.map { hexByte($0) }.joined(separator: ":"), ip: net.ip, mask: net.mask, id: net.id)
        }
        rng = options.rng.map { Rng(source: $0) }
        handoff = options.handoff
        testDevice = options.testDevice
        placement = options.placement
        compat = options.compat
    }

    /// The command-line options that `PreparedDevices.open` and `Machine.build` read, for this config
    /// (``checkSupported()`` has passed: TAP names and addresses are well-formed).
    var deviceOptions: VmmOptions {
        var options = VmmOptions()
        options.kernel = payload.kernel
        options.cmdline = payload.cmdline
        options.initramfs = payload.initramfs
        options.bootVcpus = bootVcpus
        options.maxVcpus = maxVcpus
        options.memorySize = memorySize
        options.serial = serial
        options.console = console
        options.disks = disks.map { BlockBackend.Options(path: $0.path, readonly: $0.readonly, direct: $0.direct, id: $0.id) }
        options.nets = net.map { net in
            NetOptions(tap: net.tap, mac: net.mac.flatMap(parseMac) ?? randomLocalMac(), ip: net.ip, mask: net.mask, id: net.id)
        }
        options.rng = rng?.source
        options.placement = placement
        options.compat = compat
        options.handoff = handoff
        options.testDevice = testDevice
        return options
    }

    /// Refuses, by field, what the schema accepts but the devices cannot do (a TAP name the kernel cannot
    /// take, addresses the TAP setup cannot use, the terminal claimed twice). Never pretend: such a VM is not
    /// created at all. (What the VMM has no device for at all is refused while decoding the JSON.)
    func checkSupported() throws(ConfigError) {
        for (index, disk) in disks.enumerated() {
            if let id = disk.id, id.utf8.count > 20 {
                throw ConfigError(field: "disks[\(index)].id", "at most 20 bytes (it is the virtio-blk serial)")
            }
        }
        for (index, net) in net.enumerated() {
            let field = "net[\(index)]"
            if let tap = net.tap, let problem = tapNameProblem(tap) { throw ConfigError(field: "\(field).tap", problem) }
            if let mac = net.mac, let bytes = parseMac(mac), bytes[0] & 1 != 0 {
                throw ConfigError(field: "\(field).mac", "a multicast address cannot be a NIC's address")
            }
            for (key, value) in [("ip", net.ip), ("mask", net.mask)] {
                if let value, let problem = ipv4Problem(value, isMask: key == "mask") {
                    throw ConfigError(field: "\(field).\(key)", problem)
                }
            }
        }
        if serial == .tty && console == .tty {
            throw ConfigError(field: "console.mode", "serial and console cannot both use the terminal (Tty)")
        }
    }
}

private func hexByte(_ byte: UInt8) -> String {
    let text = String(byte, radix: 16)
    return text.count == 1 ? "0" + text : text
}
