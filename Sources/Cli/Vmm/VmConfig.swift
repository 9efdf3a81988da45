import ActorVmm

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

    /// A virtio-block disk (`disks[]`); accepted in the schema, refused until the device exists.
    struct Disk: Equatable, Sendable {
        var path: String
        var readonly = false
    }

    /// A virtio-net device (`net[]`); accepted in the schema, refused until the device exists.
    struct Net: Equatable, Sendable {
        var tap: String?
        var mac: String?
        var ip: String?
        var mask: String?
    }

    /// A virtio-rng device (`rng`); accepted in the schema, refused until the device exists.
    struct Rng: Equatable, Sendable {
        var source: String
    }

    var payload: Payload
    var bootVcpus = 1
    var maxVcpus = 1
    var memorySize: UInt64 = 512 << 20
    /// Cloud Hypervisor's default for the API is a null serial port; the command line defaults to tty.
    var serial = ConsoleMode.null
    var console = ConsoleMode.off
    var disks: [Disk] = []
    var net: [Net] = []
    var rng: Rng?
    /// ActorVMM's own settings (`actor_vmm` in the JSON).
    var handoff = HandoffStrategy.inlineIfIdle
    var testDevice = true

    static let maxVcpuCount = 254
    static let minMemory: UInt64 = 4 << 20
    static let maxCmdlineLength = 2047

    init(payload: Payload) { self.payload = payload }

    /// Builds the config for a VM given on the command line (which has a kernel).
    init(options: VmmOptions) {
        payload = Payload(kernel: options.kernel ?? "", cmdline: options.cmdline)
        bootVcpus = options.bootVcpus
        maxVcpus = options.maxVcpus
        memorySize = options.memorySize
        serial = options.serial
        console = options.console
        handoff = options.handoff
        testDevice = options.testDevice
    }

    /// Refuses, by field, what the VMM cannot do yet. Never pretend: a VM that asks for a device that does
    /// not exist is not created at all.
    func checkSupported() throws(ConfigError) {
        if payload.initramfs != nil {
            throw ConfigError(field: "payload.initramfs", "not supported yet (ActorVMM boots ELF kernels without an initramfs)")
        }
        if !disks.isEmpty { throw ConfigError(field: "disks", "virtio-block devices are not supported yet") }
        if !net.isEmpty { throw ConfigError(field: "net", "virtio-net devices are not supported yet") }
        if rng != nil { throw ConfigError(field: "rng", "virtio-rng is not supported yet") }
        if console != .off { throw ConfigError(field: "console.mode", "virtio-console is not supported yet (use serial)") }
        if serial == .tty && console == .tty {
            throw ConfigError(field: "console.mode", "serial and console cannot both use the terminal (Tty)")
        }
    }
}
