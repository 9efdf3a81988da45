import ActorVmm
import Boot
import Devices
import Glibc
import Synchronization

/// A config checked against the host and made ready to boot: guest RAM allocated with the kernel, initramfs,
/// command line, boot structures and ACPI tables in it, the host compatibility mode decided, and every
/// device backend opened (serial output, disks, TAPs, rng source, console). Consumed by one boot.
struct PreparedPayload: PreparedVm {
    let memory: GuestMemory
    let boot: BootSetup
    let compat: HostCompatibility
    let devices: PreparedDevices
}

/// A host-side problem with a config, said two ways: by JSON field for the API, by option for the command
/// line (whose messages predate the API and stay as they were).
struct PrepareError: Error, Equatable, Sendable, CustomStringConvertible {
    let config: ConfigError
    let cli: String

    var description: String { config.description }
}

enum Payload {
    /// Whether compatibility mode has been logged (a reboot prepares the payload again).
    private static let compatAnnounced = Atomic<Bool>(false)

    /// Checks `config` against the host and prepares guest memory: RAM within the host's, the kernel
    /// loadable and fitting, the initramfs readable, the command line short enough, every device backend
    /// openable (serial and console files, disk images, TAPs, the rng source). Nothing of it outlives a failure.
    static func prepare(_ config: VmConfig) throws(PrepareError) -> PreparedPayload {
        let size = config.memorySize
        let hostMemory = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) &* UInt64(sysconf(Int32(_SC_PAGESIZE)))
        guard size <= hostMemory else {
            throw PrepareError(config: ConfigError(field: "memory.size", "\(size >> 20) MiB is more than the host's \(hostMemory >> 20) MiB of RAM"),
                               cli: "--memory size=\(size >> 20)M: more than the host's \(hostMemory >> 20) MiB of RAM")
        }
        let memory: GuestMemory
        do {
            memory = try GuestMemory(layout: Layout.ramRegions(size: size))
        } catch {
            throw PrepareError(config: ConfigError(field: "memory.size", "\(error)"), cli: "--memory size=\(size >> 20)M: \(error)")
        }
        if let bits = config.maxPhysBits, !MemoryOptions.reaches(memory, bits: bits) {
            let reason = "\(bits) bits of physical address do not reach the end of the guest's RAM"
            throw PrepareError(config: ConfigError(field: "cpus.max_phys_bits", reason), cli: "max_phys_bits=\(bits): \(reason)")
        }
        if config.transparentHugePages { MemoryOptions.adviseHugePages(memory) }
        // Host compatibility mode (docs/compat.md): decided before the kernel is loaded, because it adds
        // parameters to a Linux guest's command line.
        let compat = config.compat.resolve()
        if compat.isNeeded, !compatAnnounced.exchange(true, ordering: .relaxed) {  // once, not at every reboot
            Log.info("host compatibility mode on (\(config.compat == .auto ? "detected a host without VMX" : "--compat on")): instruction emulation, no PIT; for Linux kernels the command line gains: \(compat.commandLineAdditions.joined(separator: " "))")
        }
        let boot: BootSetup
        do {
            boot = try KernelLoader.load(
                .init(kernelPath: config.payload.kernel, initramfsPath: config.payload.initramfs, cmdline: config.payload.cmdline,
                      acpi: AcpiConfig(bootVcpus: config.bootVcpus, maxVcpus: config.maxVcpus,
                                       com1: config.serial == .off ? nil : .com1, hotplug: AcpiHotplugDevices.acpi(hotplugSize: config.acpiHotplugSize)),
                      linuxParameters: compat.commandLineAdditions),
                memory: memory)
        } catch {
            throw PrepareError(config: configError(error), cli: error.description)
        }
        let devices = try PreparedDevices.open(config)
        return PreparedPayload(memory: memory, boot: boot, compat: compat, devices: devices)
    }

    /// A kernel-loading error by JSON field.
    static func configError(_ error: BootError) -> ConfigError {
        switch error {
        case .unreadable(let path, let reason): ConfigError(field: "payload.kernel", "cannot read \(path): \(reason)")
        case .notElf64(let path, let reason): ConfigError(field: "payload.kernel", "\(path) is not an ELF64 x86-64 kernel: \(reason)")
        case .badSegment(let path, let reason): ConfigError(field: "payload.kernel", "\(path): \(reason)")
        case .initramfs(let path, let reason): ConfigError(field: "payload.initramfs", "\(path): \(reason)")
        case .cmdlineTooLong(let length, let capacity):
            ConfigError(field: "payload.cmdline", "\(length) bytes is too long (at most \(capacity - 1) bytes)")
        case .memory(let error): ConfigError(field: "memory.size", "too small for the boot structures: \(error)")
        case .acpi(let reason): ConfigError(field: "cpus", "ACPI tables: \(reason)")
        }
    }
}
