/// Members of Cloud Hypervisor's `VmConfig` that ActorVMM accepts at Cloud Hypervisor's default (or at any
/// value that matches what ActorVMM does anyway) and refuses otherwise, naming the field and the value. So a
/// config Cloud Hypervisor wrote itself, with every default spelled out, is accepted. The defaults are those
/// of Cloud Hypervisor's `vmm/src/vm_config.rs` and its OpenAPI file; docs/api.md lists them.
enum CloudHypervisorFields {
    /// `cpus.topology`: ActorVMM presents 1 thread per core, `max_vcpus` cores in one die and one package,
    /// which is also Cloud Hypervisor's topology when none is given. All four members are required, as there.
    static func topology(_ cpus: inout ObjectReader, maxVcpus: Int) throws(ConfigError) {
        guard var topology = try cpus.object("topology") else { return }
        var values: [Int] = []
        for key in ["threads_per_core", "cores_per_die", "dies_per_package", "packages"] {
            guard let value = try topology.integer(key, in: 1...Int(UInt16.max)) else { throw topology.missing(key) }
            values.append(value)
        }
        try topology.finish()
        guard values == [1, maxVcpus, 1, 1] else {
            throw ConfigError(field: cpus.field("topology"), "\(values.map(String.init).joined(separator: ":")) is not supported by actor-vmm (it presents 1 thread per core, max_vcpus cores, 1 die, 1 package: 1:\(maxVcpus):1:1)")
        }
    }

    /// `cpus.features`: `{"amx": false}` (Cloud Hypervisor's default); AMX state is not enabled for guests.
    static func features(_ cpus: inout ObjectReader) throws(ConfigError) {
        guard var features = try cpus.object("features") else { return }
        try features.unsupported("amx", harmless: [.bool(false)], "AMX state is not enabled for the guest")
        try features.finish()
    }

    /// The PCI placement members of every virtio device: `iommu` (false: there is no IOMMU), `pci_segment`
    /// (0: there is one segment) and `pci_device_id` (none: ActorVMM gives slots in order, from 1).
    static func pciCommon(_ device: inout ObjectReader) throws(ConfigError) {
        try device.unsupported("iommu", harmless: [.bool(false)], "there is no IOMMU")
        try device.unsupported("pci_segment", harmless: [.int(0)], "there is one PCI segment, 0")
        try device.unsupported("pci_device_id", "PCI slots are given in order")
    }

    /// `rate_limiter_config` of a disk or net device, checked in full: `{"bandwidth", "ops"}`, each a
    /// `TokenBucket` `{"size", "one_time_burst", "refill_time"}` (size and refill_time required, integers ≥ 0).
    /// ActorVMM limits no rate, so it accepts only buckets that limit nothing in Cloud Hypervisor either
    /// (size 0 or refill_time 0).
    static func rateLimiter(_ device: inout ObjectReader) throws(ConfigError) {
        guard var limiter = try device.object("rate_limiter_config") else { return }
        for key in ["bandwidth", "ops"] {
            guard var bucket = try limiter.object(key) else { continue }
            let range = UInt64(0)...UInt64(Int64.max)
            guard let size = try bucket.integer("size", in: range) else { throw bucket.missing("size") }
            _ = try bucket.integer("one_time_burst", in: range)
            guard let refill = try bucket.integer("refill_time", in: range) else { throw bucket.missing("refill_time") }
            try bucket.finish()
            guard size == 0 || refill == 0 else {
                throw ConfigError(field: bucket.path, "a limit of \(size) every \(refill) ms is not supported by actor-vmm (it limits no rates; a bucket with size or refill_time 0 limits nothing)")
            }
        }
        try limiter.finish()
    }

    /// `platform`: one PCI segment, no IOMMU, no SMBIOS tables, no confidential computing.
    static func platform(_ root: inout ObjectReader) throws(ConfigError) {
        guard var platform = try root.object("platform") else { return }
        try platform.unsupported("num_pci_segments", harmless: [.int(1)], "there is one PCI segment")
        try platform.unsupported("iommu_segments", "there is no IOMMU")
        _ = try platform.integer("iommu_address_width_bits", in: 0...255)  // means nothing without an IOMMU
        for key in ["system_serial_number", "serial_number", "system_uuid", "uuid", "oem_strings", "system_manufacturer",
                    "system_product_name", "system_version", "system_family", "system_sku_number", "chassis_asset_tag"] {
            try platform.unsupported(key, "there are no SMBIOS tables")
        }
        for key in ["tdx", "sev_snp", "iommufd"] { try platform.unsupported(key, harmless: [.bool(false)]) }
        try platform.unsupported("iommufd_fd")
        try platform.check("vfio_p2p_dma", .bool)  // means nothing without VFIO devices
        try platform.finish()
    }

    /// `debug_console` (the 0xe9 port): accepted when `Off`, its default, with any `file` and `iobase`.
    static func debugConsole(_ root: inout ObjectReader) throws(ConfigError) {
        guard var console = try root.object("debug_console") else { return }
        guard let mode = try console.choice("mode", ["Off", "Pty", "Tty", "File", "Socket", "Null"]) else { throw console.missing("mode") }
        try console.check("file", .string)
        _ = try console.integer("iobase", in: 0...0xFFFF)
        try console.finish()
        guard mode == "Off" else { throw console.refusal("mode", .string(mode), "there is no debug console port") }
    }

    /// `num_queues` or `queue_size` of a device: an integer in `range`, accepted when it is one of `accepted`.
    static func queueParameter(_ device: inout ObjectReader, _ key: String, in range: ClosedRange<Int>, accepted: [Int],
                               _ why: String) throws(ConfigError) {
        guard let value = try device.integer(key, in: range), !accepted.contains(value) else { return }
        throw device.refusal(key, .int(value), why)
    }
}
