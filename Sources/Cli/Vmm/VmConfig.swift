import ActorVmm
import Boot
import Devices

/// Everything needed to create a VM: the one config type, filled from the command line (``VmmOptions/parse(_:)``
/// fills ``VmmOptions/vm``) or from the JSON body of `vm.create` (``init(json:)``), each reader checking the
/// syntax and range of what it reads, then checked as a whole by the one ``validate()``. The lifecycle keeps
/// it to boot (and reboot) the VM, `vm.info` reports it, and `Machine.build` and `PreparedDevices` take it.
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
        /// Request queues and the entries each offers (`num_queues`, `queue_size`; Cloud Hypervisor's defaults).
        var numQueues = 1
        var queueSize = 128
    }

    /// A virtio-net device (`net[]`, `--net`) on a TAP interface: the one named, or (no `tap`) one the VMM
    /// creates; `ip`/`mask` absent mean Cloud Hypervisor's defaults where the VMM configures the TAP.
    struct Net: Equatable, Sendable {
        var tap: String?
        var mac: String?
        var ip: String?
        var mask: String?
        var id: String?
        /// Receive and transmit queues, two per queue pair (Cloud Hypervisor's `num_queues`), and the most
        /// entries each offers (`queue_size`); checked by ``VmConfig/validate()``.
        var numQueues = 2
        var queueSize = 256
        /// Offer checksum, TSO and UFO offloads (`offload_csum`, `offload_tso`, `offload_ufo`).
        var offloadCsum = true, offloadTso = true, offloadUfo = true
    }

    /// A virtio-rng device (`rng`, `--rng`).
    struct Rng: Equatable, Sendable {
        var source: String
    }

    var payload: Payload
    var bootVcpus = 1
    var maxVcpus = 1
    var memorySize: UInt64 = 512 << 20
    /// `memory.hotplug_method`: ACPI memory devices (the default) or a virtio-mem device (docs/hotplug.md).
    var hotplugMethod = MemoryHotplugMethod.acpi
    /// `memory.hotplug_size`: how much RAM `vm.resize` may add, in 128 MiB blocks (docs/hotplug.md); 0: none.
    /// With virtio-mem, the size of the device's region.
    var hotplugSize: UInt64 = 0
    /// `memory.hotplugged_size` (virtio-mem only): how much of the region the device asks the guest to plug
    /// (`requested_size`); `vm.resize` updates it, so a reboot or a restore asks for the same, as in Cloud
    /// Hypervisor.
    var hotpluggedSize: UInt64 = 0
    /// `cpus.max_phys_bits`: the guest's physical address width is the host's or this, whichever is smaller
    /// (nil: the host's; Cloud Hypervisor's default, 46, is the host's on most machines).
    var maxPhysBits: Int?
    /// `memory.thp`: guest RAM is advised to use transparent huge pages (`MADV_HUGEPAGE`), as Cloud
    /// Hypervisor does by default.
    var transparentHugePages = true
    /// Cloud Hypervisor's defaults for the API: a null serial port, no console (the command line: a tty console).
    var serial = ConsoleMode.null
    var console = ConsoleMode.off
    var disks: [Disk] = []
    var net: [Net] = []
    var rng: Rng?
    /// ActorVMM's own settings (`actor_vmm` in the JSON: handoff, test_device, event_loops; compat only from the
    /// command line).
    var handoff = HandoffStrategy.inlineIfIdle
    var testDevice = true
    var placement = Placement.shared
    var compat = CompatMode.auto

    /// The virtio-mem device's region, if the config has one (virtio-mem with a hotplug_size).
    var virtioMemSize: UInt64? { hotplugMethod == .virtioMem && hotplugSize > 0 ? hotplugSize : nil }
    /// The ACPI memory hotplug area's size (0 with virtio-mem).
    var acpiHotplugSize: UInt64 { hotplugMethod == .acpi ? hotplugSize : 0 }

    static let maxVcpuCount = 254
    static let minMemory: UInt64 = 4 << 20
    /// Hot-added RAM comes in blocks of this size (Linux's memory block size on x86-64).
    static let hotplugBlock: UInt64 = Layout.hotplugRamAlignment
    static let maxCmdlineLength = 2047

    init(payload: Payload) { self.payload = payload }

    /// The command line's defaults: no kernel yet, the console on the terminal.
    init(commandLineDefaults: Void) {
        payload = Payload(kernel: "")
        console = .tty
    }
}

/// `memory.hotplug_method`, in Cloud Hypervisor's spellings: `Acpi`/`VirtioMem` in JSON, `acpi`/`virtio-mem`
/// on the command line.
enum MemoryHotplugMethod: String, Equatable, Sendable {
    case acpi = "Acpi", virtioMem = "VirtioMem"

    init?(option: String) {
        switch option {
        case "acpi": self = .acpi
        case "virtio-mem": self = .virtioMem
        default: return nil
        }
    }
}
