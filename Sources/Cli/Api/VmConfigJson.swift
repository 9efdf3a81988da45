import ActorVmm

/// Cloud Hypervisor's `VmConfig` JSON (OpenAPI schema, version 54) ⇄ ``VmConfig``.
///
/// Every field of the schema is known here. Fields ActorVMM implements are read and range-checked; the
/// devices (`disks`, `net`, `rng`, a virtio `console`) are read and shape-checked here, then checked against
/// what the devices can do by ``VmConfig/checkSupported()``; everything else is accepted only when absent, null,
/// empty or a harmless default (``ObjectReader/unsupported(_:harmless:)``). A field the schema does not
/// have is an error. Errors name the field: `cpus.boot_vcpus: expected an integer from 1 to 254`.
extension VmConfig {
    init(json: JsonValue) throws(ConfigError) {
        var root = try ObjectReader(json, at: "")
        guard var payloadReader = try root.object("payload") else { throw root.missing("payload") }
        self.init(payload: try Self.decodePayload(&payloadReader))

        if var cpus = try root.object("cpus") {
            guard let boot = try cpus.integer("boot_vcpus", in: 1...Self.maxVcpuCount) else { throw cpus.missing("boot_vcpus") }
            guard let max = try cpus.integer("max_vcpus", in: 1...Self.maxVcpuCount) else { throw cpus.missing("max_vcpus") }
            guard max >= boot else { throw ConfigError(field: "cpus.max_vcpus", "must be at least boot_vcpus (\(boot))") }
            for key in ["topology", "max_phys_bits", "affinity", "features", "core_scheduling"] { try cpus.unsupported(key) }
            try cpus.unsupported("kvm_hyperv", harmless: [.bool(false)])
            try cpus.unsupported("nested", harmless: [.bool(true)])  // KVM's CPUID is passed through as it is
            try cpus.finish()
            (bootVcpus, maxVcpus) = (boot, max)
        }
        if var memory = try root.object("memory") {
            guard let size = try memory.integer("size", in: UInt64(1)...UInt64.max) else { throw memory.missing("size") }
            guard size >= Self.minMemory else { throw ConfigError(field: "memory.size", "must be at least 4 MiB (\(Self.minMemory))") }
            guard size % 4096 == 0 else { throw ConfigError(field: "memory.size", "must be a multiple of 4096") }
            for key in ["hotplug_size", "hotplugged_size", "hugepage_size", "zones"] { try memory.unsupported(key) }
            for key in ["mergeable", "shared", "hugepages", "prefault", "reserve", "thp"] {
                try memory.unsupported(key, harmless: [.bool(false)])
            }
            try memory.unsupported("hotplug_method", harmless: [.string("Acpi")])  // nothing is hotplugged
            try memory.finish()
            memorySize = size
        }
        if var serialReader = try root.object("serial") {
            serial = try Self.decodeConsole(&serialReader, allowed: ["Off", "Null", "Tty", "File"])
            try serialReader.finish()
        }
        if var consoleReader = try root.object("console") {
            console = try Self.decodeConsole(&consoleReader, allowed: ["Off", "Null", "Tty", "File"])
            try consoleReader.unsupported("iommu", harmless: [.bool(false)])
            try consoleReader.check("id", .string)
            try consoleReader.check("pci_segment", .integer)
            try consoleReader.check("pci_device_id", .integer)
            try consoleReader.finish()
        }
        disks = try (root.array("disks") ?? []).map { (path, value) throws(ConfigError) in try Self.decodeDisk(value, at: path) }
        net = try (root.array("net") ?? []).map { (path, value) throws(ConfigError) in try Self.decodeNet(value, at: path) }
        if var rngReader = try root.object("rng") {
            guard let source = try rngReader.nonEmptyString("src") else { throw rngReader.missing("src") }
            try rngReader.check("id", .string)
            try rngReader.check("pci_segment", .integer)
            try rngReader.check("pci_device_id", .integer)
            try rngReader.unsupported("iommu", harmless: [.bool(false)])
            try rngReader.finish()
            rng = Rng(source: source)
        }
        if var own = try root.object("actor_vmm") {
            if let text = try own.choice("handoff", HandoffStrategy.allCases.map(\.rawValue)) {
                handoff = HandoffStrategy(rawValue: text) ?? .inlineIfIdle
            }
            testDevice = try own.bool("test_device") ?? true
            try own.finish()
        }
        for key in ["rate_limit_groups", "balloon", "fs", "generic_vhost_user", "pmem", "devices", "user_devices",
                    "vdpa", "vsock", "numa", "rtc", "pci_segments", "platform", "tpm", "landlock_rules"] {
            try root.unsupported(key)
        }
        for key in ["iommu", "watchdog", "pvpanic", "landlock_enable"] { try root.unsupported(key, harmless: [.bool(false)]) }
        try root.unsupported("debug_console", harmless: [.object(["mode": .string("Off")])])
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

    private static func decodeDisk(_ value: JsonValue, at path: String) throws(ConfigError) -> Disk {
        var reader = try ObjectReader(value, at: path)
        guard let diskPath = try reader.nonEmptyString("path") else { throw reader.missing("path") }
        let readonly = try reader.bool("readonly") ?? false
        let direct = try reader.bool("direct") ?? false
        let id = try reader.string("id")
        for key in ["iommu", "vhost_user", "backing_files", "sparse"] { try reader.check(key, .bool) }
        for key in ["vhost_socket", "serial", "rate_limit_group"] { try reader.check(key, .string) }
        _ = try reader.integer("num_queues", in: 1...256)
        _ = try reader.integer("queue_size", in: 1...32768)
        for key in ["pci_segment", "pci_device_id"] { try reader.check(key, .integer) }
        try reader.check("rate_limiter_config", .object)
        try reader.check("queue_affinity", .array)
        _ = try reader.choice("image_type", ["FixedVhd", "Qcow2", "Raw", "Vhdx", "Unknown"])
        _ = try reader.choice("lock_granularity", ["ByteRange", "Full"])
        try reader.finish()
        return Disk(path: diskPath, readonly: readonly, direct: direct, id: id)
    }

    private static func decodeNet(_ value: JsonValue, at path: String) throws(ConfigError) -> Net {
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
        _ = try reader.integer("mtu", in: 68...65535)
        _ = try reader.integer("num_queues", in: 1...256)
        _ = try reader.integer("queue_size", in: 1...32768)
        for key in ["iommu", "vhost_user", "offload_tso", "offload_ufo", "offload_csum"] { try reader.check(key, .bool) }
        try reader.check("vhost_socket", .string)
        _ = try reader.choice("vhost_mode", ["Client", "Server"])
        for key in ["pci_segment", "pci_device_id"] { try reader.check(key, .integer) }
        try reader.check("rate_limiter_config", .object)
        try reader.finish()
        return net
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
            JsonMember(key: "cpus", value: .object(["boot_vcpus": .int(bootVcpus), "max_vcpus": .int(maxVcpus)])),
            JsonMember(key: "memory", value: .object(["size": .int(memorySize)])),
            JsonMember(key: "payload", value: .object(payloadMembers)),
            JsonMember(key: "serial", value: Self.json(serial)),
            JsonMember(key: "console", value: Self.json(console)),
        ]
        if !disks.isEmpty {
            members.append(JsonMember(key: "disks", value: .array(disks.map {
                .object([JsonMember(key: "path", value: .string($0.path)), JsonMember(key: "readonly", value: .bool($0.readonly)),
                         JsonMember(key: "direct", value: .bool($0.direct))] + ($0.id.map { [JsonMember(key: "id", value: .string($0))] } ?? []))
            })))
        }
        if !net.isEmpty {
            members.append(JsonMember(key: "net", value: .array(net.map { net in
                .object([("tap", net.tap), ("mac", net.mac), ("ip", net.ip), ("mask", net.mask), ("id", net.id)].compactMap { key, value in
                    value.map { JsonMember(key: key, value: .string($0)) }
                })
            })))
        }
        if let rng { members.append(JsonMember(key: "rng", value: .object(["src": .string(rng.source)]))) }
        members.append(JsonMember(key: "actor_vmm", value: .object([
            "handoff": .string(handoff.rawValue), "test_device": .bool(testDevice),
        ])))
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
