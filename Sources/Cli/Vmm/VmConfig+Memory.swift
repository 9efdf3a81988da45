import ActorVmm
import Boot
import Devices

extension VmConfig {
    /// The memory hotplug settings as a whole (part of ``validate()``), in Cloud Hypervisor's terms:
    /// `hotplug_size` in 128 MiB multiples (Linux's memory block), `hotplugged_size` only with virtio-mem and a
    /// `hotplug_size`, at most that, in multiples of the device's 2 MiB blocks.
    func validateMemoryHotplug() throws(ConfigError) {
        func fail(_ key: String, _ value: UInt64, _ why: String) -> ConfigError {
            ConfigError(field: "memory.\(key)", why, cli: "--memory \(key)=\(cliSize(value)): \(why)")
        }
        if hotplugSize % Self.hotplugBlock != 0 {
            throw fail("hotplug_size", hotplugSize, "must be a multiple of 128 MiB (\(Self.hotplugBlock))")
        }
        if hotplugSize > Self.maxHotplugSize {
            throw fail("hotplug_size", hotplugSize, "must be at most 64 TiB (\(Self.maxHotplugSize))")
        }
        if let bits = maxPhysBits, let size = virtioMemSize, bits < 64 {
            let end = Layout.virtioMemStart(bootRam: memorySize, acpiHotplugSize: acpiHotplugSize) + size
            if end > UInt64(1) << UInt64(bits) {
                let why = "the virtio-mem region ends at \(hex(end)), beyond the \(bits) address bits of cpus.max_phys_bits"
                throw ConfigError(field: "memory.hotplug_size", why, cli: "--memory hotplug_size=\(cliSize(size)): \(why)")
            }
        }
        guard hotpluggedSize > 0 else { return }
        if hotplugMethod != .virtioMem {
            throw fail("hotplugged_size", hotpluggedSize, "needs hotplug_method virtio-mem (VirtioMem)")
        }
        if hotpluggedSize > hotplugSize {
            throw fail("hotplugged_size", hotpluggedSize, "must be at most hotplug_size (\(hotplugSize))")
        }
        if hotpluggedSize % VirtioMem.defaultBlockSize != 0 {
            throw fail("hotplugged_size", hotpluggedSize, "must be a multiple of the virtio-mem block size, 2 MiB (\(VirtioMem.defaultBlockSize))")
        }
    }

    /// The most `hotplug_size` may be (the API's schema limit, 2⁴⁶ bytes).
    static let maxHotplugSize: UInt64 = 1 << 46

    /// `bytes` as the command line would write it (`1G`, `384M`, or bytes).
    private func cliSize(_ bytes: UInt64) -> String {
        if bytes > 0 && bytes % (1 << 30) == 0 { return "\(bytes >> 30)G" }
        if bytes > 0 && bytes % (1 << 20) == 0 { return "\(bytes >> 20)M" }
        return "\(bytes)"
    }
}
