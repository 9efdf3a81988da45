// Pci.swift: PCI configuration space (both access mechanisms), bus-0 enumeration, BAR sizing
// and capability lists.
//
// Configuration space is one more `RegisterBlock`: through mechanism #1 (`PciConfigPorts`,
// ports 0xCF8/0xCFC) or through MMCONFIG/ECAM (`MmioBlock` at 0xE8000000 + dev << 15 +
// fn << 12), so the same code (enumeration, BAR sizing) runs over either and the `pci` check
// can compare the two. Drivers use ECAM: one access is one MMIO exit instead of two port exits.

enum Pci {
    // Type 0 header registers (offsets into configuration space).
    static let vendorID = 0x00            // u16; 0xFFFF: nothing there
    static let deviceID = 0x02            // u16
    static let command = 0x04             // u16
    static let status = 0x06              // u16
    static let revision = 0x08            // u8; class code in 0x09 (prog-if) .. 0x0B (base class)
    static let headerType = 0x0E          // u8; bit 7: multi-function device
    static let bar0 = 0x10                // u32 each, BAR0..BAR5 up to 0x24
    static let subsystemVendorID = 0x2C   // u16
    static let subsystemID = 0x2E         // u16
    static let capabilitiesPointer = 0x34 // u8
    static let interruptPin = 0x3D        // u8; 0: no INTx

    static let commandMemorySpace: UInt16 = 1 << 1   // decode memory BARs
    static let commandBusMaster: UInt16 = 1 << 2     // allow the device to DMA
    static let statusCapabilityList: UInt16 = 1 << 4

    static let capabilityMsix: UInt8 = 0x11
    static let capabilityVendor: UInt8 = 0x09

    /// MMCONFIG (ECAM) base: 256 MiB for buses 0-255; bus 0 is its first MiB.
    static let ecamBase: UInt64 = 0xE800_0000

    /// Configuration space of 00:`device`.`function` through ECAM.
    static func ecam(_ device: UInt8, _ function: UInt8) -> MmioBlock {
        MmioBlock(base: ecamBase + UInt64(device) << 15 + UInt64(function) << 12)
    }

    /// Calls `body(device, function, config)` for every function present on bus 0, reading
    /// configuration space through `access`. Function 0 of each slot first; functions 1-7 only
    /// for a multi-function device (header type bit 7).
    static func forEachFunction<Config: RegisterBlock>(
        access: (UInt8, UInt8) -> Config, _ body: (UInt8, UInt8, Config) -> Void
    ) {
        for device: UInt8 in 0..<32 {
            let function0 = access(device, 0)
            guard function0.read16(at: vendorID) != 0xFFFF else { continue }
            body(device, 0, function0)
            guard function0.read8(at: headerType) & 0x80 != 0 else { continue }
            for function: UInt8 in 1..<8 {
                let config = access(device, function)
                if config.read16(at: vendorID) != 0xFFFF { body(device, function, config) }
            }
        }
    }

    /// Calls `body(id, offset)` for each capability in the list of `config` (none when the
    /// status register says there is no list). Stops after 48 entries, should the list loop.
    static func forEachCapability(_ config: some RegisterBlock, _ body: (UInt8, Int) -> Void) {
        guard config.read16(at: status) & statusCapabilityList != 0 else { return }
        var offset = Int(config.read8(at: capabilitiesPointer) & 0xFC)
        var seen = 0
        while offset >= 0x40 && seen < 48 {
            body(config.read8(at: offset), offset)
            offset = Int(config.read8(at: offset + 1) & 0xFC)
            seen += 1
        }
    }

    /// What BAR0 decodes, found the classic way: with decoding off, write all-ones, read back
    /// the size mask, restore (for a 64-bit BAR also the upper half, BAR1).
    struct Bar {
        var address: UInt64 = 0
        var size: UInt64 = 0
        var isMemory = false
        var is64Bit = false
        var prefetchable = false
    }

    static func sizeBar0(_ config: some RegisterBlock) -> Bar {
        var bar = Bar()
        let savedCommand = config.read16(at: command)
        config.write16(savedCommand & ~(commandMemorySpace | 1), at: command)  // no memory/IO decode
        let low = config.read32(at: bar0)
        config.write32(0xFFFF_FFFF, at: bar0)
        let lowMask = config.read32(at: bar0)
        config.write32(low, at: bar0)
        bar.isMemory = low & 1 == 0
        bar.is64Bit = bar.isMemory && low & 0x6 == 0x4
        bar.prefetchable = bar.isMemory && low & 0x8 != 0
        var high: UInt32 = 0
        var highMask: UInt32 = 0xFFFF_FFFF      // a 32-bit BAR decodes nothing above 4 GiB
        if bar.is64Bit {
            high = config.read32(at: bar0 + 4)
            config.write32(0xFFFF_FFFF, at: bar0 + 4)
            highMask = config.read32(at: bar0 + 4)
            config.write32(high, at: bar0 + 4)
        }
        config.write16(savedCommand, at: command)
        let flagBits: UInt32 = bar.isMemory ? 0xF : 0x3
        if lowMask & ~flagBits != 0 || (bar.is64Bit && highMask != 0) {
            let mask = UInt64(highMask) << 32 | UInt64(lowMask & ~flagBits)
            bar.size = ~mask &+ 1
        }
        bar.address = UInt64(high) << 32 | UInt64(low & ~flagBits)
        return bar
    }
}

/// Configuration space through mechanism #1: write bus/device/function/register to
/// CONFIG_ADDRESS (0xCF8, 32-bit, bit 31 enable), then access CONFIG_DATA (0xCFC-0xCFF) at the
/// register's byte within the dword. Two port exits per access.
struct PciConfigPorts: RegisterBlock {
    let device: UInt8
    let function: UInt8

    static let configAddress: UInt16 = 0xCF8
    static let configData: UInt16 = 0xCFC

    private func select(_ offset: Int) -> UInt16 {
        let address: UInt32 = 0x8000_0000 | UInt32(device) << 11 | UInt32(function) << 8
            | UInt32(offset & 0xFC)
        pio_write32(Self.configAddress, address)
        return Self.configData + UInt16(offset & 3)
    }

    func read8(at offset: Int) -> UInt8 { pio_read8(select(offset)) }
    func read16(at offset: Int) -> UInt16 { pio_read16(select(offset)) }
    func read32(at offset: Int) -> UInt32 { pio_read32(select(offset)) }
    func write8(_ value: UInt8, at offset: Int) { pio_write8(select(offset), value) }
    func write16(_ value: UInt16, at offset: Int) { pio_write16(select(offset), value) }
    func write32(_ value: UInt32, at offset: Int) { pio_write32(select(offset), value) }
}

/// One PCI function on bus 0, reached through ECAM.
struct PciFunction {
    let device: UInt8
    let function: UInt8

    var config: MmioBlock { Pci.ecam(device, function) }
    var vendorID: UInt16 { config.read16(at: Pci.vendorID) }
    var deviceID: UInt16 { config.read16(at: Pci.deviceID) }
    /// Base class << 16 | subclass << 8 | programming interface.
    var classCode: UInt32 { config.read32(at: Pci.revision) >> 8 }

    /// The address BAR0 decodes (64-bit when BAR0 is a 64-bit memory BAR).
    var bar0Address: UInt64 {
        let low = config.read32(at: Pci.bar0)
        let high: UInt32 = low & 0x7 == 0x4 ? config.read32(at: Pci.bar0 + 4) : 0
        return UInt64(high) << 32 | UInt64(low & ~0xF)
    }

    /// Turns on memory decoding and bus mastering (a device may DMA only with the latter).
    func enableMemoryAndBusMaster() {
        let command = config.read16(at: Pci.command)
        config.write16(command | Pci.commandMemorySpace | Pci.commandBusMaster, at: Pci.command)
    }

    /// The `index`-th function (in bus order) with this vendor and device ID, if any.
    static func find(vendor: UInt16, device: UInt16, index: Int) -> PciFunction? {
        var found: PciFunction? = nil
        var seen = 0
        Pci.forEachFunction(access: Pci.ecam) { dev, fn, config in
            guard found == nil, config.read16(at: Pci.vendorID) == vendor,
                  config.read16(at: Pci.deviceID) == device else { return }
            if seen == index { found = PciFunction(device: dev, function: fn) }
            seen += 1
        }
        return found
    }
}

extension TextSink {
    /// Writes a bus-0 PCI address: `00:03.0`.
    mutating func write(pciDevice device: UInt8, function: UInt8) {
        write("00:")
        write(hex: device, digits: 2)
        write(".")
        write(decimal: function)
    }
}
