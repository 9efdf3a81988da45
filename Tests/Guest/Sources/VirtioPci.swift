// VirtioPci.swift: the virtio-pci modern transport (virtio 1.2 §4.1) and the generic part of
// driving a virtio device: initialisation (§3.1.1), feature negotiation, MSI-X, queue setup.
//
// A device's PCI capability list points into BAR0 (see docs/devices.md):
//   common configuration (cfg_type 1)  features, status, queue registers (layout below)
//   notifications        (cfg_type 2)  queue q's doorbell at + queue_notify_off(q) × multiplier
//   ISR status           (cfg_type 3)  unused here: with MSI-X every queue has its own vector
//   device configuration (cfg_type 4)  device-specific (capacity, MAC, ...)
//   MSI-X (capability 0x11)            table of {address, data, control} entries, PBA
//
// MSI-X entry 0 is the configuration-change interrupt; entry 1 + q belongs to queue q. Each
// entry raises its own IDT vector (Interrupts.allocateVectors), so a queue's completions are
// counted separately from everything else.

/// Why a driver step failed: a short name and the value that was seen, for the detail line
/// (`features-ok=rejected` style: `what=0xvalue`).
struct DriverError: Error {
    let what: StaticString
    let value: UInt64

    init(_ what: StaticString, _ value: some BinaryInteger) {
        self.what = what
        self.value = UInt64(truncatingIfNeeded: value)
    }

    init(_ what: StaticString) {
        self.init(what, 0)
    }
}

extension TextSink {
    mutating func write(_ error: DriverError) {
        write(error.what)
        write("=")
        write(hex: error.value)
    }
}

/// Feature bits every device type shares (virtio 1.2 §6).
enum VirtioFeature {
    static let ringIndirectDescriptors: UInt64 = 1 << 28
    static let ringEventIndex: UInt64 = 1 << 29
    static let version1: UInt64 = 1 << 32
}

/// Device status bits (§2.1).
enum VirtioStatus {
    static let acknowledge: UInt8 = 1
    static let driver: UInt8 = 2
    static let driverOK: UInt8 = 4
    static let featuresOK: UInt8 = 8
    static let needsReset: UInt8 = 0x40
    static let failed: UInt8 = 0x80
}

struct VirtioPciDevice {
    static let vendorID: UInt16 = 0x1AF4
    /// Modern virtio PCI device IDs are 0x1040 + the virtio device ID.
    static func pciDeviceID(virtioID: UInt16) -> UInt16 { 0x1040 + virtioID }

    // struct virtio_pci_common_cfg (§4.1.4.3), offsets in the common configuration.
    static let deviceFeatureSelect = 0x00  // u32
    static let deviceFeature = 0x04        // u32, the 32 bits the select picks
    static let driverFeatureSelect = 0x08  // u32
    static let driverFeature = 0x0C        // u32
    static let configMsixVector = 0x10     // u16
    static let numQueues = 0x12            // u16
    static let deviceStatus = 0x14         // u8
    static let configGeneration = 0x15     // u8
    static let queueSelect = 0x16          // u16; the queue_* registers below are that queue's
    static let queueSize = 0x18            // u16: max on reset, the driver may lower it
    static let queueMsixVector = 0x1A      // u16: MSI-X entry, 0xFFFF = none
    static let queueEnable = 0x1C          // u16
    static let queueNotifyOff = 0x1E       // u16
    static let queueDesc = 0x20            // u64: descriptor table
    static let queueDriver = 0x28          // u64: available ring
    static let queueDevice = 0x30          // u64: used ring
    static let noVector: UInt16 = 0xFFFF

    // MSI-X capability: message control (u16) at +2: bits 10:0 table size - 1, bit 14
    // function mask, bit 15 enable; table offset | BAR index (bits 2:0) at +4.
    static let msixEnable: UInt16 = 1 << 15
    static let msixFunctionMask: UInt16 = 1 << 14

    let pci: PciFunction
    let common: MmioBlock
    let deviceConfig: MmioBlock
    let notifyBase: UInt64
    let notifyLength: UInt32
    let notifyMultiplier: UInt32
    let msixCapability: Int
    let msixTable: MmioBlock
    let msixTableSize: Int
    private(set) var numQueues = 0
    /// IDT vector of MSI-X entry 0; entry i raises `firstVector + i`.
    private(set) var firstVector: UInt8 = 0
    /// The features both sides agreed on (after `start`).
    private(set) var features: UInt64 = 0

    /// Reads the capability list, turns on memory decoding and bus mastering.
    init(_ pci: PciFunction) throws(DriverError) {
        self.pci = pci
        struct Location { var found = false, bar: UInt8 = 0, offset: UInt32 = 0, length: UInt32 = 0 }
        var locations = InlineArray<5, Location>(repeating: Location())  // by cfg_type 1-4
        var multiplier: UInt32 = 0
        var msix = 0
        let config = pci.config
        Pci.forEachCapability(config) { id, offset in
            if id == Pci.capabilityMsix && msix == 0 { msix = offset }
            guard id == Pci.capabilityVendor else { return }
            // struct virtio_pci_cap: cfg_type at +3, bar at +4, offset at +8, length at +12.
            let type = Int(config.read8(at: offset + 3))
            guard type >= 1 && type <= 4 && !locations[type].found else { return }  // first of each
            locations[type] = Location(found: true, bar: config.read8(at: offset + 4),
                                       offset: config.read32(at: offset + 8),
                                       length: config.read32(at: offset + 12))
            if type == 2 { multiplier = config.read32(at: offset + 16) }  // notify_off_multiplier
        }
        for type in 1...4 {
            guard locations[type].found else { throw DriverError("missing-virtio-cap", type) }
            guard locations[type].bar == 0 else { throw DriverError("cap-not-in-bar0", type) }
        }
        guard msix != 0 else { throw DriverError("no-msix-cap") }
        let tableInfo = config.read32(at: msix + 4)
        guard tableInfo & 7 == 0 else { throw DriverError("msix-table-bar", tableInfo & 7) }

        let bar = pci.bar0Address
        guard bar != 0 else { throw DriverError("bar0", bar) }
        common = MmioBlock(base: bar + UInt64(locations[1].offset))
        notifyBase = bar + UInt64(locations[2].offset)
        notifyLength = locations[2].length
        notifyMultiplier = multiplier
        deviceConfig = MmioBlock(base: bar + UInt64(locations[4].offset))
        msixCapability = msix
        msixTable = MmioBlock(base: bar + UInt64(tableInfo & ~7))
        msixTableSize = Int(config.read16(at: msix + 2) & 0x7FF) + 1
        pci.enableMemoryAndBusMaster()
    }

    var status: UInt8 { common.read8(at: Self.deviceStatus) }

    private func addStatus(_ bits: UInt8) {
        common.write8(status | bits, at: Self.deviceStatus)
    }

    /// Writing 0 resets the device; it has finished when status reads back 0.
    func reset() {
        common.write8(0, at: Self.deviceStatus)
        var polls = 0
        while status != 0 && polls < 100_000 { polls += 1; cpu_pause() }
    }

    /// §3.1.1 steps 1-6 plus MSI-X: reset, ACKNOWLEDGE, DRIVER, accept the offered features
    /// among `wanted` (VERSION_1 always), FEATURES_OK (checked by reading it back), then MSI-X
    /// entries for the configuration vector and every queue. Queues come next (`setUpQueue`),
    /// then `setDriverOK`.
    mutating func start(wanted: UInt64) throws(DriverError) {
        reset()
        guard status == 0 else { throw DriverError("reset-status", status) }
        addStatus(VirtioStatus.acknowledge)
        addStatus(VirtioStatus.driver)

        common.write32(0, at: Self.deviceFeatureSelect)
        let low = common.read32(at: Self.deviceFeature)
        common.write32(1, at: Self.deviceFeatureSelect)
        let high = common.read32(at: Self.deviceFeature)
        let offered = UInt64(high) << 32 | UInt64(low)
        guard offered & VirtioFeature.version1 != 0 else { throw DriverError("no-version-1", offered) }
        features = offered & (wanted | VirtioFeature.version1)
        common.write32(0, at: Self.driverFeatureSelect)
        common.write32(UInt32(truncatingIfNeeded: features), at: Self.driverFeature)
        common.write32(1, at: Self.driverFeatureSelect)
        common.write32(UInt32(truncatingIfNeeded: features >> 32), at: Self.driverFeature)
        addStatus(VirtioStatus.featuresOK)
        guard status & VirtioStatus.featuresOK != 0 else {
            throw DriverError("features-ok-rejected", features)
        }

        numQueues = Int(common.read16(at: Self.numQueues))
        try enableMsix(entries: numQueues + 1)
        // Configuration changes raise entry 0.
        common.write16(0, at: Self.configMsixVector)
        let configVector = common.read16(at: Self.configMsixVector)
        guard configVector == 0 else { throw DriverError("config-vector-rejected", configVector) }
    }

    /// Enables MSI-X with `entries` entries pointing at this CPU's LAPIC, each with its own
    /// vector. Like Linux: enable with the function masked, program and unmask the entries,
    /// then clear the function mask.
    private mutating func enableMsix(entries: Int) throws(DriverError) {
        guard entries <= msixTableSize else { throw DriverError("msix-table-size", msixTableSize) }
        firstVector = Interrupts.allocateVectors(entries)
        let control = pci.config.read16(at: msixCapability + 2)
        pci.config.write16(control | Self.msixEnable | Self.msixFunctionMask, at: msixCapability + 2)
        let address = Lapic.msiAddress
        for entry in 0..<entries {
            let offset = entry * 16
            msixTable.write32(UInt32(truncatingIfNeeded: address), at: offset)        // address low
            msixTable.write32(UInt32(truncatingIfNeeded: address >> 32), at: offset + 4)
            msixTable.write32(UInt32(firstVector) + UInt32(entry), at: offset + 8)  // data: vector
            msixTable.write32(0, at: offset + 12)                                   // unmasked
        }
        pci.config.write16((control | Self.msixEnable) & ~Self.msixFunctionMask, at: msixCapability + 2)
    }

    /// Sets up queue `index` (size min(max, 16)) in fresh DMA memory with its own MSI-X entry,
    /// and enables it.
    func setUpQueue(_ index: UInt16) throws(DriverError) -> Virtqueue {
        guard Int(index) < numQueues else { throw DriverError("no-queue", index) }
        common.write16(index, at: Self.queueSelect)
        let maximum = Int(common.read16(at: Self.queueSize))
        guard maximum != 0 else { throw DriverError("queue-size-0", index) }
        var size = Virtqueue.maxSize
        while size > maximum { size /= 2 }  // a power of 2 no larger than the device's maximum
        common.write16(UInt16(size), at: Self.queueSize)

        let notifyOffset = UInt32(common.read16(at: Self.queueNotifyOff)) &* notifyMultiplier
        guard notifyOffset + 2 <= notifyLength else { throw DriverError("notify-off", notifyOffset) }
        let queue = Virtqueue(index: index, size: size, vector: firstVector + UInt8(1 + index),
                              notifyAddress: notifyBase + UInt64(notifyOffset))
        try enableQueue(index, descriptors: queue.descriptorTableAddress,
                        available: queue.availableRingAddress, used: queue.usedRingAddress)
        return queue
    }

    /// Points the selected queue `index` at its three areas, gives it MSI-X entry 1 + index, and
    /// enables it (the queue size has been written already).
    private func enableQueue(_ index: UInt16, descriptors: UInt64, available: UInt64, used: UInt64) throws(DriverError) {
        write64(descriptors, at: Self.queueDesc)
        write64(available, at: Self.queueDriver)
        write64(used, at: Self.queueDevice)
        let entry = UInt16(1) + index
        common.write16(entry, at: Self.queueMsixVector)
        let accepted = common.read16(at: Self.queueMsixVector)
        guard accepted == entry else { throw DriverError("queue-vector-rejected", accepted) }
        common.write16(1, at: Self.queueEnable)
    }

    /// Sets up queue `index` with exactly `size` entries (a power of 2) over areas the caller laid
    /// out (the benchmarks' rings, BenchVirtio.swift); returns its doorbell address and IDT vector.
    func setUpQueue(_ index: UInt16, size: Int, descriptors: UInt64, available: UInt64,
                    used: UInt64) throws(DriverError) -> (notifyAddress: UInt64, vector: UInt8) {
        guard Int(index) < numQueues else { throw DriverError("no-queue", index) }
        common.write16(index, at: Self.queueSelect)
        let maximum = Int(common.read16(at: Self.queueSize))
        guard size <= maximum else { throw DriverError("queue-size-max", maximum) }
        common.write16(UInt16(size), at: Self.queueSize)
        let notifyOffset = UInt32(common.read16(at: Self.queueNotifyOff)) &* notifyMultiplier
        guard notifyOffset + 2 <= notifyLength else { throw DriverError("notify-off", notifyOffset) }
        try enableQueue(index, descriptors: descriptors, available: available, used: used)
        return (notifyBase + UInt64(notifyOffset), firstVector + UInt8(1 + index))
    }

    /// A 64-bit common-configuration field as two 32-bit halves, low first (allowed by §4.1.3.1).
    private func write64(_ value: UInt64, at offset: Int) {
        common.write32(UInt32(truncatingIfNeeded: value), at: offset)
        common.write32(UInt32(truncatingIfNeeded: value >> 32), at: offset + 4)
    }

    /// DRIVER_OK: the device is live. Checked by reading the status back.
    func setDriverOK() throws(DriverError) {
        addStatus(VirtioStatus.driverOK)
        let now = status
        guard now & VirtioStatus.driverOK != 0, now & VirtioStatus.needsReset == 0 else {
            throw DriverError("driver-ok-status", now)
        }
    }

    /// Whether the device has flagged DEVICE_NEEDS_RESET (something it could not accept).
    var needsReset: Bool { status & VirtioStatus.needsReset != 0 }

    /// The `index`-th virtio device of type `virtioID` on bus 0 (in slot order), if any.
    static func find(virtioID: UInt16, index: Int) -> PciFunction? {
        PciFunction.find(vendor: vendorID, device: pciDeviceID(virtioID: virtioID), index: index)
    }
}
