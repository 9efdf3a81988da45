import ActorVmm
import Boot
import Devices
import EpollLoop

/// The RAM half of `vm.resize` with `hotplug_method=virtio-mem` (docs/hotplug.md): one virtio-mem device,
/// `mem0` as Cloud Hypervisor names it, over a region of `hotplug_size` bytes reserved at boot (one mapping,
/// `MAP_NORESERVE`, one KVM memory slot, not in the E820 map). A resize sets the device's `requested_size`
/// to `desired_ram − size` and raises its configuration interrupt; the guest's driver plugs or unplugs blocks
/// to match. RAM can shrink back to the boot size, never below it.
final class VirtioMemHotplug: Sendable {
    /// The device's id (Cloud Hypervisor's default memory zone).
    static let id = "mem0"
    let device: VirtioPciDevice
    let status: VirtioMemStatus
    let bootRam: UInt64
    let start: UInt64
    let regionSize: UInt64

    private init(device: VirtioPciDevice, status: VirtioMemStatus, bootRam: UInt64, start: UInt64, regionSize: UInt64) {
        self.device = device
        self.status = status
        self.bootRam = bootRam
        self.start = start
        self.regionSize = regionSize
    }

    /// Reserves the region and attaches the device (after the other virtio devices, as Cloud Hypervisor
    /// does), if `config` asks for virtio-mem; nil otherwise.
    nonisolated(nonsending) static func attach(config: VmConfig, vm: Vm, devices: DeviceManager, loop: EventLoop) async throws -> VirtioMemHotplug? {
        guard let size = config.virtioMemSize else { return nil }
        let start = Layout.virtioMemStart(bootRam: config.memorySize, acpiHotplugSize: config.acpiHotplugSize)
        try vm.addMemory(start: GuestAddress(start), size: size)
        if config.transparentHugePages { MemoryOptions.adviseHugePages(vm.memory) }
        let backend = try VirtioMem(start: start, size: size, requested: config.hotpluggedSize)
        let status = backend.status
        let device = try await devices.attachVirtio(id: id, backend: backend, loop: loop)
        Log.info("virtio-mem: \(size >> 20) MiB region at \(hex(start)), \(config.hotpluggedSize >> 20) MiB requested")
        return VirtioMemHotplug(device: device, status: status, bootRam: config.memorySize, start: start, regionSize: size)
    }

    /// Asks the guest for `desired` bytes of RAM in all: boot RAM plus `desired − boot` from the region.
    nonisolated(nonsending) func resize(to desired: UInt64) async throws(MemoryHotplug.ResizeError) {
        let requested = try Self.requestedSize(for: desired, bootRam: bootRam, regionSize: regionSize)
        do {
            try await device.resizeMemory(requested: requested)
        } catch {
            throw .init(message: "virtio-mem: \(error)", refused: false)
        }
        Log.info("virtio-mem: \(requested >> 20) MiB requested (\(status.plugged.load(ordering: .relaxed) >> 20) MiB plugged)")
    }

    /// The `requested_size` for `desired_ram` bytes in all, or why that size cannot be asked for: below the
    /// boot RAM, beyond it plus the region, or not a whole number of blocks above it.
    static func requestedSize(for desired: UInt64, bootRam: UInt64, regionSize: UInt64) throws(MemoryHotplug.ResizeError) -> UInt64 {
        guard desired >= bootRam else {
            throw .init(message: "desired_ram \(desired): below the boot RAM (memory.size, \(bootRam) bytes), which virtio-mem cannot take back", refused: true)
        }
        guard desired - bootRam <= regionSize else {
            throw .init(message: "desired_ram \(desired): beyond memory.size + hotplug_size (\(bootRam + regionSize) bytes)", refused: true)
        }
        guard (desired - bootRam) % VirtioMem.defaultBlockSize == 0 else {
            throw .init(message: "desired_ram \(desired): must be memory.size plus a multiple of the virtio-mem block size, 2 MiB", refused: true)
        }
        return desired - bootRam
    }
}
