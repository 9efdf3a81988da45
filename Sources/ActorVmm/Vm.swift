import CKvm
import EpollLoop
import Glibc

/// Options fixed when the VM is created.
public struct VmOptions: Sendable {
    /// Create the in-kernel i8254 PIT (`KVM_CREATE_PIT2`).
    public var pit: Bool = true
    public init(pit: Bool = true) { self.pit = pit }
}

/// A KVM virtual machine: its descriptor, guest RAM registered as memory slots, the in-kernel interrupt
/// controllers, and the irqfd/ioeventfd plumbing devices use to bypass vCPU threads.
public final class Vm: Sendable {
    /// Where KVM keeps the three-page TSS that VMX needs for real-mode emulation (below the LAPIC/IOAPIC).
    public static let tssAddress: UInt64 = 0xFFFB_D000
    /// Where KVM keeps its identity-map page for real mode (one page below the TSS).
    public static let identityMapAddress: UInt64 = 0xFFFB_C000

    public let kvm: Kvm
    public let fd: Int32
    public let memory: GuestMemory
    /// Whether the in-kernel PIT was created (its state is part of a snapshot).
    public let hasPit: Bool

    /// Creates the VM: `KVM_CREATE_VM`, TSS and identity-map addresses, `KVM_CREATE_IRQCHIP` (PIC + IOAPIC +
    /// LAPICs), optionally `KVM_CREATE_PIT2`, and one `KVM_SET_USER_MEMORY_REGION` slot per RAM region.
    public init(kvm: Kvm, memory: GuestMemory, options: VmOptions = VmOptions()) throws(KvmError) {
        self.kvm = kvm
        self.memory = memory
        hasPit = options.pit
        fd = try kvmIoctl("KVM_CREATE_VM") { ckvm_ioctl(kvm.fd, CKVM_CREATE_VM) }
        do {
            _ = try kvmIoctl("KVM_SET_TSS_ADDR") { ckvm_ioctl_arg(fd, CKVM_SET_TSS_ADDR, UInt(Self.tssAddress)) }
            var identity = Self.identityMapAddress
            _ = try? kvmIoctl("KVM_SET_IDENTITY_MAP_ADDR") { ckvm_ioctl_ptr(fd, CKVM_SET_IDENTITY_MAP_ADDR, &identity) }
            _ = try kvmIoctl("KVM_CREATE_IRQCHIP") { ckvm_ioctl(fd, CKVM_CREATE_IRQCHIP) }
            if options.pit {
                var config = kvm_pit_config()
                _ = try kvmIoctl("KVM_CREATE_PIT2") { ckvm_ioctl_ptr(fd, CKVM_CREATE_PIT2, &config) }
            }
            for (slot, region) in memory.regions.enumerated() {
                var mapping = kvm_userspace_memory_region(
                    slot: UInt32(slot), flags: 0, guest_phys_addr: region.start.rawValue,
                    memory_size: region.size, userspace_addr: UInt64(region.hostAddress))
                _ = try kvmIoctl("KVM_SET_USER_MEMORY_REGION") {
                    ckvm_ioctl_ptr(fd, CKVM_SET_USER_MEMORY_REGION, &mapping)
                }
            }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// The value of `KVM_CHECK_EXTENSION` on this VM (0 when absent); some capabilities, such as
    /// `KVM_CAP_XSAVE2`'s buffer size, are answered per VM.
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, ckvm_ioctl_arg(fd, CKVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// Makes writes to `eventFD` raise interrupt line `gsi` (edge) in the in-kernel irqchip.
    /// The corresponding ioctl is `KVM_IRQFD`.
    public func registerIrqfd(eventFD: Int32, gsi: UInt32) throws(KvmError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD)
        request.gsi = gsi
        _ = try kvmIoctl("KVM_IRQFD") { ckvm_ioctl_ptr(fd, CKVM_IRQFD, &request) }
    }

    /// Undoes ``registerIrqfd(eventFD:gsi:)``.
    public func unregisterIrqfd(eventFD: Int32, gsi: UInt32) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD)
        request.gsi = gsi
        request.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        _ = ckvm_ioctl_ptr(fd, CKVM_IRQFD, &request)
    }

    /// Adds `size` bytes of RAM at `start` while the VM runs (memory hotplug): a new mapping in guest
    /// memory, registered as the next KVM memory slot (`KVM_SET_USER_MEMORY_REGION`) before devices can
    /// see it. The region must lie above all existing RAM. Tell the guest afterwards (ACPI memory device).
    @discardableResult
    public func addMemory(start: GuestAddress, size: UInt64) throws(GuestMemoryAppendError<KvmError>) -> GuestMemory.Region {
        try memory.append(start: start, size: size) { (region, slot) throws(KvmError) in
            var mapping = kvm_userspace_memory_region(
                slot: UInt32(slot), flags: 0, guest_phys_addr: region.start.rawValue,
                memory_size: region.size, userspace_addr: UInt64(region.hostAddress))
            _ = try kvmIoctl("KVM_SET_USER_MEMORY_REGION") { ckvm_ioctl_ptr(fd, CKVM_SET_USER_MEMORY_REGION, &mapping) }
        }
    }

    /// Creates vCPU `id` with its `kvm_run` mapping.
    public func createVcpu(id: Int) throws(KvmError) -> Vcpu {
        let vcpuFD = try kvmIoctl("KVM_CREATE_VCPU") { ckvm_ioctl_arg(fd, CKVM_CREATE_VCPU, UInt(id)) }
        let size: Int
        do {
            size = try kvm.vcpuMmapSize()
        } catch {
            close(vcpuFD)
            throw error
        }
        guard let run = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpuFD, 0), run != MAP_FAILED else {
            let error = Errno.current
            close(vcpuFD)
            throw .ioctl(name: "mmap(kvm_run)", errno: error)
        }
        return Vcpu(id: id, fd: vcpuFD, run: run, runSize: size)
    }
}
