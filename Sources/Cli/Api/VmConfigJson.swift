import ActorVmm

/// Cloud Hypervisor's `VmConfig` JSON (OpenAPI schema, version 54) ⇄ ``VmConfig``.
///
/// Every field of the schema is known here. Fields ActorVMM implements are read and range-checked; the
/// devices (`disks`, `net`, `rng`, a virtio `console`) are read and shape-checked here, then checked against
/// what the devices can do by ``VmConfig/validate()``; everything else is accepted when absent, null,
/// empty, at Cloud Hypervisor's default or at a value that matches what ActorVMM does anyway
/// (``ObjectReader/unsupported(_:harmless:_:)``, ``CloudHypervisorFields``), so that a config Cloud Hypervisor
/// wrote with every default spelled out is accepted. A field the schema does not have is an error. Errors
/// name the field: `cpus.boot_vcpus: expected an integer from 1 to 254`, `memory.hugepages: true is not
/// supported by actor-vmm`.
extension VmConfig {
    init(json: JsonValue) throws(ConfigError) {
        var root = try ObjectReader(json, at: "")
        guard var payloadReader = try root.object("payload") else { throw root.missing("payload") }
        self.init(payload: try Self.decodePayload(&payloadReader))

        if var cpus = try root.object("cpus") {
            guard let boot = try cpus.integer("boot_vcpus", in: 1...Self.maxVcpuCount) else { throw cpus.missing("boot_vcpus") }
            guard let max = try cpus.integer("max_vcpus", in: 1...Self.maxVcpuCount) else { throw cpus.missing("max_vcpus") }
            guard max >= boot else { throw ConfigError(field: "cpus.max_vcpus", "must be at least boot_vcpus (\(boot))") }
            try CloudHypervisorFields.topology(&cpus, maxVcpus: max)
            maxPhysBits = try cpus.integer("max_phys_bits", in: 32...255)  // Cloud Hypervisor: min(host's, this)
            try cpus.unsupported("affinity", "vCPU threads are not pinned")
            try CloudHypervisorFields.features(&cpus)
            // "Vm" (the default) and "Off": ActorVMM sets no core-scheduling cookie (docs/api.md).
            try cpus.unsupported("core_scheduling", harmless: [.string("Vm"), .string("Off")], "no per-vCPU core scheduling")
            try cpus.unsupported("profile", harmless: [.string("Host")], "the host's CPUID is passed through")
            try cpus.unsupported("kvm_hyperv", harmless: [.bool(false)], "no Hyper-V enlightenments")
            try cpus.unsupported("nested", harmless: [.bool(true)], "KVM's CPUID is passed through as it is")
            try cpus.finish()
            (bootVcpus, maxVcpus) = (boot, max)
        }
        if var memory = try root.object("memory") {
            guard let size = try memory.integer("size", in: UInt64(1)...UInt64.max) else { throw memory.missing("size") }
            guard size >= Self.minMemory else { throw ConfigError(field: "memory.size", "must be at least 4 MiB (\(Self.minMemory))") }
            guard size % 4096 == 0 else { throw ConfigError(field: "memory.size", "must be a multiple of 4096") }
            // Sizes and their agreement are checked by VmConfig.validate(), as the command line's.
            let hotplug = try memory.integer("hotplug_size", in: UInt64(0)...UInt64(1) << 46) ?? 0
            let hotplugged = try memory.integer("hotplugged_size", in: UInt64(0)...UInt64(1) << 46) ?? 0
            for key in ["hugepage_size", "zones"] { try memory.unsupported(key) }
            for key in ["mergeable", "shared", "hugepages", "prefault", "reserve"] {
                try memory.unsupported(key, harmless: [.bool(false)])
            }
            transparentHugePages = try memory.bool("thp") ?? true
            if let method = try memory.string("hotplug_method") {
                guard let parsed = MemoryHotplugMethod(rawValue: method) else {
                    throw ConfigError(field: "memory.hotplug_method", "expected \"Acpi\" or \"VirtioMem\", not \"\(method)\"")
                }
                hotplugMethod = parsed
            }
            try memory.finish()
            memorySize = size
            hotplugSize = hotplug
            hotpluggedSize = hotplugged
        }
        if var serialReader = try root.object("serial") {
            serial = try Self.decodeConsole(&serialReader, allowed: ["Off", "Null", "Tty", "File"])
            try serialReader.finish()
        }
        if var consoleReader = try root.object("console") {
            console = try Self.decodeConsole(&consoleReader, allowed: ["Off", "Null", "Tty", "File"])
            try consoleReader.check("id", .string)
            try CloudHypervisorFields.pciCommon(&consoleReader)
            try consoleReader.finish()
        }
        disks = try (root.array("disks") ?? []).map { (path, value) throws(ConfigError) in try Self.decodeDisk(value, at: path) }
        net = try (root.array("net") ?? []).map { (path, value) throws(ConfigError) in try Self.decodeNet(value, at: path) }
        if var rngReader = try root.object("rng") {
            guard let source = try rngReader.nonEmptyString("src") else { throw rngReader.missing("src") }
            try rngReader.check("id", .string)
            try CloudHypervisorFields.pciCommon(&rngReader)
            try rngReader.finish()
            rng = Rng(source: source)
        }
        if var own = try root.object("actor_vmm") {
            if let text = try own.choice("handoff", HandoffStrategy.allCases.map(\.rawValue)) {
                handoff = HandoffStrategy(rawValue: text) ?? .inlineIfIdle
            }
            testDevice = try own.bool("test_device") ?? true
            if let text = try own.choice("event_loops", [Placement.shared, .perDevice, .perQueue].map(\.rawValue)) {
                placement = Placement(rawValue: text) ?? .shared
            }
            try own.finish()
        }
        for key in ["rate_limit_groups", "balloon", "fs", "generic_vhost_user", "pmem", "devices", "user_devices",
                    "vdpa", "vsock", "numa", "rtc", "pci_segments", "tpm", "landlock_rules"] {
            try root.unsupported(key)
        }
        for key in ["iommu", "watchdog", "pvpanic", "landlock_enable"] { try root.unsupported(key, harmless: [.bool(false)]) }
        try CloudHypervisorFields.platform(&root)
        try CloudHypervisorFields.debugConsole(&root)
        try root.finish()
    }

    private static func decodePayload(_ reader: inout ObjectReader) throws(ConfigError) -> Payload {
        guard let kernel = try reader.nonEmptyString("kernel") else {
            throw reader.missing("kernel", "ActorVMM boots a kernel; firmware and IGVM payloads are not supported")
        }
        let cmdline = try reader.string("cmdline") ?? ""
        guard cmdline.utf8.count <= maxCmdlineLength else {
            throw ConfigError(field: "payload.cmdline", "\(cmdline.utf8.count) bytes is too long (at most \(maxCmdlineLength) bytes)")
        }
        let initramfs = try reader.nonEmptyString("initramfs")
        for key in ["firmware", "igvm", "host_data"] { try reader.unsupported(key) }
        try reader.finish()
        return Payload(kernel: kernel, cmdline: cmdline, initramfs: initramfs)
    }

    /// `SerialConfig` or the common part of `ConsoleConfig`: `mode` (required), `file`, `socket`.
    private static func decodeConsole(_ reader: inout ObjectReader, allowed: [String]) throws(ConfigError) -> ConsoleMode {
        let modes = ["Off", "Pty", "Tty", "File", "Socket", "Null"]
        guard let mode = try reader.choice("mode", modes) else { throw reader.missing("mode") }
        let file = try reader.nonEmptyString("file")
        try reader.check("socket", .string)
        guard allowed.contains(mode) else { throw ConfigError(field: reader.field("mode"), "\(mode) is not supported yet") }
        switch mode {
        case "Off": return .off
        case "Null": return .null
        case "Tty": return .tty
        default:
            guard let file else { throw reader.missing("file", "mode File needs a path") }
            return .file(file)
        }
    }

    static func decodeDisk(_ value: JsonValue, at path: String) throws(ConfigError) -> Disk {
        var reader = try ObjectReader(value, at: path)
        guard let diskPath = try reader.nonEmptyString("path") else { throw reader.missing("path") }
        let readonly = try reader.bool("readonly") ?? false
        let direct = try reader.bool("direct") ?? false
        let id = try reader.string("id")
        try CloudHypervisorFields.pciCommon(&reader)
        try reader.unsupported("vhost_user", harmless: [.bool(false)])
        try reader.unsupported("vhost_socket")
        try reader.unsupported("serial", "the disk's serial (GET_ID) is its id")
        try reader.unsupported("rate_limit_group", "rate limit groups are not supported")
        try CloudHypervisorFields.rateLimiter(&reader)
        try reader.unsupported("queue_affinity", "queues are served on the device's event loop")
        try reader.check("backing_files", .bool)  // raw images have no backing files
        try reader.unsupported("sparse", harmless: [.bool(true)], "discard punches holes in the image")
        for key in ["disable_io_uring", "disable_aio"] { try reader.check(key, .bool) }  // ActorVMM uses neither
        var disk = Disk(path: diskPath, readonly: readonly, direct: direct, id: id)
        disk.numQueues = try reader.integer("num_queues", in: 1...256) ?? disk.numQueues
        disk.queueSize = try reader.integer("queue_size", in: 1...32768) ?? disk.queueSize
        if disk.numQueues > VmConfig.Disk.maxQueues {
            throw reader.refusal("num_queues", .int(disk.numQueues), "at most \(VmConfig.Disk.maxQueues) queues")
        }
        if !VmConfig.Disk.validQueueSizes.contains(disk.queueSize) {
            throw reader.refusal("queue_size", .int(disk.queueSize), "queues offer a power of 2 from 2 to 256 entries")
        }
        if let type = try reader.choice("image_type", ["FixedVhd", "Qcow2", "Raw", "Vhdx", "Unknown"]), type != "Raw", type != "Unknown" {
            throw reader.refusal("image_type", .string(type), "images are read as raw")
        }
        _ = try reader.choice("lock_granularity", ["ByteRange", "Full"])  // ActorVMM takes no lock (docs/api.md)
        try reader.finish()
        return disk
    }

    static func decodeNet(_ value: JsonValue, at path: String) throws(ConfigError) -> Net {
        var reader = try ObjectReader(value, at: path)
        var net = Net()
        net.tap = try reader.string("tap").flatMap { $0.isEmpty ? nil : $0 }  // "" or absent: the VMM creates one
        net.ip = try reader.string("ip")
        net.mask = try reader.string("mask")
        net.id = try reader.string("id")
        for key in ["mac", "host_mac"] {
            guard let mac = try reader.string(key) else { continue }
            guard isMacAddress(mac) else {
                throw ConfigError(field: reader.field(key), "\"\(mac)\" is not a MAC address (xx:xx:xx:xx:xx:xx)")
            }
            if key == "mac" { net.mac = mac }
        }
        if let mtu = try reader.integer("mtu", in: 68...65535), mtu != 1500 {
            throw reader.refusal("mtu", .int(mtu), "the MTU is 1500")
        }
        // Checked by VmConfig.validate(), as the command line's.
        if let queues = try reader.integer("num_queues", in: 1...256) { net.numQueues = queues }
        if let size = try reader.integer("queue_size", in: 1...32768) { net.queueSize = size }
        net.offloadCsum = try reader.bool("offload_csum") ?? true
        net.offloadTso = try reader.bool("offload_tso") ?? true
        net.offloadUfo = try reader.bool("offload_ufo") ?? true
        try reader.unsupported("vhost_user", harmless: [.bool(false)])
        try reader.unsupported("vhost_socket")
        _ = try reader.choice("vhost_mode", ["Client", "Server"])  // means nothing without vhost_user
        try CloudHypervisorFields.pciCommon(&reader)
        try CloudHypervisorFields.rateLimiter(&reader)
        try reader.finish()
        return net
    }

    /// A net device's `num_queues`, `queue_size` and `offload_*`, where they are not the defaults (vm.info
    /// reports what was given).
    static func queueAndOffloadMembers(_ net: Net) -> [JsonMember] {
        let defaults = Net()
        var members: [JsonMember] = []
        if net.numQueues != defaults.numQueues { members.append(JsonMember(key: "num_queues", value: .int(net.numQueues))) }
        if net.queueSize != defaults.queueSize { members.append(JsonMember(key: "queue_size", value: .int(net.queueSize))) }
        for (key, value) in [("offload_csum", net.offloadCsum), ("offload_tso", net.offloadTso), ("offload_ufo", net.offloadUfo)] where !value {
            members.append(JsonMember(key: key, value: .bool(false)))
        }
        return members
    }

    static func isMacAddress(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 6 && parts.allSatisfy { $0.count == 2 && $0.allSatisfy(\.isHexDigit) }
    }

    // MARK: - Encoding (vm.info)

    /// The config as Cloud Hypervisor's `VmConfig` JSON; ``init(json:)`` reads it back to an equal config.
    var json: JsonValue {
        var payloadMembers = [JsonMember(key: "kernel", value: .string(payload.kernel)),
                              JsonMember(key: "cmdline", value: .string(payload.cmdline))]
        if let initramfs = payload.initramfs { payloadMembers.append(JsonMember(key: "initramfs", value: .string(initramfs))) }
        var members: [JsonMember] = [
            JsonMember(key: "cpus", value: .object([JsonMember(key: "boot_vcpus", value: .int(bootVcpus)),
                                                    JsonMember(key: "max_vcpus", value: .int(maxVcpus))]
                                                   + (maxPhysBits.map { [JsonMember(key: "max_phys_bits", value: .int($0))] } ?? []))),
            JsonMember(key: "memory", value: .object([JsonMember(key: "size", value: .int(memorySize))]
                + (hotplugMethod != .acpi ? [JsonMember(key: "hotplug_method", value: .string(hotplugMethod.rawValue))] : [])
                + (hotplugSize > 0 ? [JsonMember(key: "hotplug_size", value: .int(hotplugSize))] : [])
                + (hotpluggedSize > 0 ? [JsonMember(key: "hotplugged_size", value: .int(hotpluggedSize))] : [])
                + [JsonMember(key: "thp", value: .bool(transparentHugePages))])),
            JsonMember(key: "payload", value: .object(payloadMembers)),
            JsonMember(key: "serial", value: Self.json(serial)),
            JsonMember(key: "console", value: Self.json(console)),
        ]
        if !disks.isEmpty {
            members.append(JsonMember(key: "disks", value: .array(disks.map(\.json))))
        }
        if !net.isEmpty {
            members.append(JsonMember(key: "net", value: .array(net.map(\.json))))
        }
        if let rng { members.append(JsonMember(key: "rng", value: .object(["src": .string(rng.source)]))) }
        var own = [JsonMember(key: "handoff", value: .string(handoff.rawValue)),
                   JsonMember(key: "test_device", value: .bool(testDevice))]
        if placement != .shared {  // a snapshot, a migration keep it
            own.append(JsonMember(key: "event_loops", value: .string(placement.rawValue)))
        }
        members.append(JsonMember(key: "actor_vmm", value: .object(own)))
        return .object(members)
    }

    private static func json(_ mode: ConsoleMode) -> JsonValue {
        switch mode {
        case .off: .object(["mode": .string("Off")])
        case .null: .object(["mode": .string("Null")])
        case .tty: .object(["mode": .string("Tty")])
        case .file(let path): .object(["mode": .string("File"), "file": .string(path)])
        case .pty: .object(["mode": .string("Pty")])
        }
    }
}

extension VmConfig.Disk {
    /// The disk as Cloud Hypervisor's `DiskConfig` (an entry of `disks`, or vm.add-disk's body).
    var json: JsonValue {
        .object([JsonMember(key: "path", value: .string(path)), JsonMember(key: "readonly", value: .bool(readonly)),
                 JsonMember(key: "direct", value: .bool(direct)), JsonMember(key: "num_queues", value: .int(numQueues)),
                 JsonMember(key: "queue_size", value: .int(queueSize))] + (id.map { [JsonMember(key: "id", value: .string($0))] } ?? []))
    }
}

extension VmConfig.Net {
    /// The device as Cloud Hypervisor's `NetConfig` (an entry of `net`, or vm.add-net's body).
    var json: JsonValue {
        .object([("tap", tap), ("mac", mac), ("ip", ip), ("mask", mask), ("id", id)].compactMap { key, value in
            value.map { JsonMember(key: key, value: .string($0)) }
        } + VmConfig.queueAndOffloadMembers(self))
    }
}
