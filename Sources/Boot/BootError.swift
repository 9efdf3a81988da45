import ActorVmm

/// Why a kernel could not be loaded. Each case says what and where; rendered once at the top.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The kernel file cannot be read.
    case unreadable(path: String, reason: String)
    /// The file is not an ELF64 x86-64 executable.
    case notElf64(path: String, reason: String)
    /// The ELF is well-formed but cannot be placed in guest RAM.
    case badSegment(path: String, reason: String)
    /// The initramfs cannot be read or placed.
    case initramfs(path: String, reason: String)
    /// The command line does not fit.
    case cmdlineTooLong(length: Int, capacity: Int)
    /// Writing a boot structure to guest memory failed (guest RAM too small for it).
    case memory(GuestMemoryError)
    /// The ACPI tables cannot describe this configuration.
    case acpi(String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "--kernel \(path): cannot read: \(reason)"
        case .notElf64(let path, let reason): "--kernel \(path): not a kernel ActorVMM can boot: \(reason)"
        case .badSegment(let path, let reason): "--kernel \(path): \(reason)"
        case .initramfs(let path, let reason): "--initramfs \(path): \(reason)"
        case .cmdlineTooLong(let length, let capacity):
            "--cmdline: \(length) bytes is too long (at most \(capacity - 1) bytes)"
        case .memory(let error): "boot: \(error)"
        case .acpi(let reason): "ACPI tables: \(reason)"
        }
    }
}
