// TestsPci.swift: `pci`, the bus as docs/devices.md describes it, seen from configuration space.
//
// Enumerates bus 0 through ECAM and checks, for every function found:
//   - mechanism #1 (0xCF8/0xCFC) reads the same 256 bytes as MMCONFIG (and every empty slot
//     reads all-ones both ways);
//   - 00:00.0 is the host bridge 8086:0d57, class 06:00:00;
//   - a virtio function (vendor 1af4) has device 0x1040 + a known virtio id with its class,
//     revision >= 1, subsystem 1af4:0040, no INTx pin, a 64-bit non-prefetchable memory BAR0 of
//     32 KiB in the 0xC0000000-0xE7FFFFFF window (sized by writing all-ones; restored after),
//     an MSI-X capability with a table in BAR0, and the four virtio capabilities inside BAR0.
// Detail: `functions=6 virtio=5 (blk=2 net=1 rng=1 console=1) ecam=ok`, and on failure the first
// problem found: `problem=00:03.0 bar0-size=0x4000 problems=2`.

/// Virtio device ids (virtio 1.2 §5) and what docs/devices.md gives each.
enum VirtioID {
    static let net: UInt16 = 1
    static let block: UInt16 = 2
    static let console: UInt16 = 3
    static let entropy: UInt16 = 4

    /// The PCI class code (base << 16 | sub << 8 | prog-if) of each, nil for an unknown id.
    static func classCode(_ id: UInt16) -> UInt32? {
        switch id {
        case net: 0x02_00_00
        case block: 0x01_80_00
        case console: 0x07_80_00
        case entropy: 0x00_FF_00
        default: nil
        }
    }
}

func pciTest(_ context: inout TestContext) -> Bool {
    var functions = 0
    var virtio = 0
    var perType = InlineArray<5, Int>(repeating: 0)  // by virtio id 1-4
    var hostBridge = false
    var ecamAgrees = true
    var problems = 0
    var first = (device: UInt8(0), function: UInt8(0), what: StaticString(""), value: UInt64(0))

    func problem(_ device: UInt8, _ function: UInt8, _ what: StaticString, _ value: some BinaryInteger) {
        if problems == 0 { first = (device, function, what, UInt64(truncatingIfNeeded: value)) }
        problems += 1
    }

    // Every slot's function 0: the vendor/device dword is the same through both mechanisms.
    for device: UInt8 in 0..<32 {
        let viaPorts = PciConfigPorts(device: device, function: 0).read32(at: Pci.vendorID)
        let viaEcam = Pci.ecam(device, 0).read32(at: Pci.vendorID)
        if viaPorts != viaEcam {
            ecamAgrees = false
            problem(device, 0, "ecam-id", viaEcam)
        }
    }

    Pci.forEachFunction(access: Pci.ecam) { device, function, config in
        functions += 1
        let ports = PciConfigPorts(device: device, function: function)
        for offset in stride(from: 0, to: 256, by: 4) where ports.read32(at: offset) != config.read32(at: offset) {
            ecamAgrees = false
            problem(device, function, "ecam-differs-at", offset)
            break
        }

        let vendor = config.read16(at: Pci.vendorID)
        let id = config.read16(at: Pci.deviceID)
        let classCode = config.read32(at: Pci.revision) >> 8
        if device == 0 && function == 0 {
            hostBridge = vendor == 0x8086 && id == 0x0D57 && classCode == 0x06_00_00
            if !hostBridge { problem(0, 0, "host-bridge", UInt32(vendor) << 16 | UInt32(id)) }
        }
        guard vendor == VirtioPciDevice.vendorID else { return }
        virtio += 1
        let virtioID = id &- 0x1040
        guard let expectedClass = VirtioID.classCode(virtioID) else {
            problem(device, function, "virtio-device-id", id)
            return
        }
        perType[Int(virtioID)] += 1
        if classCode != expectedClass { problem(device, function, "class", classCode) }
        let revision = config.read8(at: Pci.revision)
        if revision < 1 { problem(device, function, "revision", revision) }
        let subsystem = config.read32(at: Pci.subsystemVendorID)  // vendor low, id high
        if subsystem != 0x0040_1AF4 { problem(device, function, "subsystem", subsystem) }
        let pin = config.read8(at: Pci.interruptPin)
        if pin != 0 { problem(device, function, "interrupt-pin", pin) }

        let before = config.read32(at: Pci.bar0)
        let bar = Pci.sizeBar0(config)
        if !bar.isMemory || !bar.is64Bit || bar.prefetchable {
            problem(device, function, "bar0-type", before & 0xF)
        } else if bar.size != 0x8000 {
            problem(device, function, "bar0-size", bar.size)
        } else if bar.address < 0xC000_0000 || bar.address >= 0xE800_0000 || bar.address % 0x8000 != 0 {
            problem(device, function, "bar0-address", bar.address)
        }
        if config.read32(at: Pci.bar0) != before { problem(device, function, "bar0-not-restored", config.read32(at: Pci.bar0)) }

        var msix = false
        var virtioCaps: UInt32 = 0  // bit n: a cfg_type n capability inside BAR0
        Pci.forEachCapability(config) { capability, offset in
            if capability == Pci.capabilityMsix {
                let tableSize = Int(config.read16(at: offset + 2) & 0x7FF) + 1
                let table = config.read32(at: offset + 4)
                let pba = config.read32(at: offset + 8)
                msix = table & 7 == 0 && pba & 7 == 0 && Int(table) + tableSize * 16 <= 0x8000
                if !msix { problem(device, function, "msix-table", table) }
            } else if capability == Pci.capabilityVendor {
                let type = config.read8(at: offset + 3)
                let barIndex = config.read8(at: offset + 4)
                let end = UInt64(config.read32(at: offset + 8)) + UInt64(config.read32(at: offset + 12))
                if type >= 1 && type <= 4 && barIndex == 0 && end <= 0x8000 { virtioCaps |= 1 << UInt32(type) }
            }
        }
        if !msix { problem(device, function, "no-msix", 0) }
        if virtioCaps != 0b11110 { problem(device, function, "virtio-caps", virtioCaps) }
    }

    context.detail.write("functions=")
    context.detail.write(decimal: functions)
    context.detail.write(" virtio=")
    context.detail.write(decimal: virtio)
    context.detail.write(" (blk=")
    context.detail.write(decimal: perType[Int(VirtioID.block)])
    context.detail.write(" net=")
    context.detail.write(decimal: perType[Int(VirtioID.net)])
    context.detail.write(" rng=")
    context.detail.write(decimal: perType[Int(VirtioID.entropy)])
    context.detail.write(" console=")
    context.detail.write(decimal: perType[Int(VirtioID.console)])
    context.detail.write(ecamAgrees ? ") ecam=ok" : ") ecam=differs")
    if problems > 0 {
        context.detail.write(" problem=")
        context.detail.write(pciDevice: first.device, function: first.function)
        context.detail.write(" ")
        context.detail.write(first.what)
        context.detail.write("=")
        context.detail.write(hex: first.value)
        context.detail.write(" problems=")
        context.detail.write(decimal: problems)
    }
    return hostBridge && problems == 0
}
