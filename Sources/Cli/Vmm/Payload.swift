import ActorVmm
import Boot
import Devices
import Glibc

/// A config checked against the host and made ready to boot: guest RAM allocated with the kernel, command
/// line and boot structures in it, and the serial output opened. Consumed by one boot.
struct PreparedPayload: PreparedVm {
    let memory: GuestMemory
    let boot: BootSetup
    let serialOutput: (any SerialOutput)?
}

/// A host-side problem with a config, said two ways: by JSON field for the API, by option for the command
/// line (whose messages predate the API and stay as they were).
struct PrepareError: Error, Equatable, Sendable, CustomStringConvertible {
    let config: ConfigError
    let cli: String

    var description: String { config.description }
}

enum Payload {
    /// Checks `config` against the host and prepares guest memory: RAM within the host's, the kernel a
    /// loadable ELF64 that fits, the command line short enough, the serial file writable. Nothing of it
    /// outlives a failure.
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
        let boot: BootSetup
        do {
            boot = try KernelLoader.loadElfKernel(path: config.payload.kernel, cmdline: config.payload.cmdline, memory: memory)
        } catch {
            throw PrepareError(config: configError(error), cli: error.description)
        }
        let serialOutput: (any SerialOutput)?
        switch config.serial {
        case .off: serialOutput = nil
        case .null: serialOutput = DiscardOutput()
        case .tty: serialOutput = FileOutput(fd: 1, owned: false)
        case .file(let path):
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                let reason = String(cString: strerror(errno))
                throw PrepareError(config: ConfigError(field: "serial.file", "cannot open \(path): \(reason)"),
                                   cli: "--serial file=\(path): cannot open: \(reason)")
            }
            serialOutput = FileOutput(fd: fd, owned: true)
        }
        return PreparedPayload(memory: memory, boot: boot, serialOutput: serialOutput)
    }

    /// A kernel-loading error by JSON field.
    static func configError(_ error: BootError) -> ConfigError {
        switch error {
        case .unreadable(let path, let reason): ConfigError(field: "payload.kernel", "cannot read \(path): \(reason)")
        case .notElf64(let path, let reason): ConfigError(field: "payload.kernel", "\(path) is not an ELF64 x86-64 kernel: \(reason)")
        case .badSegment(let path, let reason): ConfigError(field: "payload.kernel", "\(path): \(reason)")
        case .cmdlineTooLong(let length, let capacity):
            ConfigError(field: "payload.cmdline", "\(length) bytes is too long (at most \(capacity - 1) bytes)")
        case .memory(let error): ConfigError(field: "memory.size", "too small for the boot structures: \(error)")
        }
    }
}
