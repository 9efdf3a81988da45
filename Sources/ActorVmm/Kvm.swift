import CKvm
import EpollLoop
import Glibc

/// Errors from the KVM layer: host-side failures that stop the VM (never caused by the guest alone).
public enum KvmError: Error, Equatable, Sendable, CustomStringConvertible {
    /// /dev/kvm cannot be opened.
    case unavailable(path: String, errno: Errno)
    /// The KVM API version is not 12.
    case unsupportedAPIVersion(Int32)
    /// A KVM ioctl failed.
    case ioctl(name: String, errno: Errno)
    /// A capability ActorVMM needs is missing.
    case missingCapability(String)

    public var description: String {
        switch self {
        case .unavailable(let path, let errno): return "cannot open \(path): \(errno)"
        case .unsupportedAPIVersion(let version): return "KVM API version \(version) is not supported (expected 12)"
        case .ioctl(let name, let errno): return "\(name) failed: \(errno)"
        case .missingCapability(let name): return "KVM lacks capability \(name)"
        }
    }
}

/// Calls one KVM ioctl; retries EINTR, and names the ioctl in the error.
@inline(__always)
func kvmIoctl(_ name: String, _ body: () -> Int32) throws(KvmError) -> Int32 {
    do {
        return try syscallValue(body)
    } catch {
        throw .ioctl(name: name, errno: error)
    }
}

/// The open `/dev/kvm` system handle.
public final class Kvm: Sendable {
    public let fd: Int32

    /// Opens `/dev/kvm` (or `path`) and checks the API version.
    public init(path: String = "/dev/kvm") throws(KvmError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .unavailable(path: path, errno: .current) }
        self.fd = fd
        let version = ckvm_ioctl(fd, CKVM_GET_API_VERSION)
        guard version == KVM_API_VERSION else { throw .unsupportedAPIVersion(version) }
    }

    deinit { close(fd) }

    /// True when this machine has a usable /dev/kvm (for tests that skip otherwise).
    public static var isAvailable: Bool {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        if fd < 0 { return false }
        close(fd)
        return true
    }

    /// The value of `KVM_CHECK_EXTENSION` for `capability` (0 when absent).
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, ckvm_ioctl_arg(fd, CKVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// The size of each vCPU's shared `kvm_run` mapping. The corresponding ioctl is `KVM_GET_VCPU_MMAP_SIZE`.
    public func vcpuMmapSize() throws(KvmError) -> Int {
        Int(try kvmIoctl("KVM_GET_VCPU_MMAP_SIZE") { ckvm_ioctl(fd, CKVM_GET_VCPU_MMAP_SIZE) })
    }

    /// The CPUID leaves KVM can expose. The corresponding ioctl is `KVM_GET_SUPPORTED_CPUID`.
    public func supportedCPUID() throws(KvmError) -> [kvm_cpuid_entry2] {
        let capacity = 256
        let header = MemoryLayout<kvm_cpuid2>.size
        let buffer = UnsafeMutableRawPointer.allocate(
            byteCount: header + capacity * MemoryLayout<kvm_cpuid_entry2>.stride, alignment: 8)
        defer { buffer.deallocate() }
        let cpuid = buffer.bindMemory(to: kvm_cpuid2.self, capacity: 1)
        cpuid.pointee.nent = UInt32(capacity)
        _ = try kvmIoctl("KVM_GET_SUPPORTED_CPUID") { ckvm_ioctl_ptr(fd, CKVM_GET_SUPPORTED_CPUID, buffer) }
        let entries = (buffer + header).bindMemory(to: kvm_cpuid_entry2.self, capacity: capacity)
        return Array(UnsafeBufferPointer(start: entries, count: Int(cpuid.pointee.nent)))
    }
}
