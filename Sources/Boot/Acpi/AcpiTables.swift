import ActorVmm

/// What the ACPI tables describe. The defaults are ActorVMM's machine (docs/acpi.md); a caller sets the
/// vCPU counts and whether the serial port exists.
public struct AcpiConfig: Equatable, Sendable {
    /// A 16550-compatible serial port: its 8 I/O ports start at `port`; its interrupt is `gsi`.
    public struct SerialPort: Equatable, Sendable {
        public var port: UInt16
        public var gsi: UInt32
        public init(port: UInt16, gsi: UInt32) {
            self.port = port
            self.gsi = gsi
        }
        /// COM1: ports 0x3F8–0x3FF, IRQ 4 (GSI 4).
        public static let com1 = SerialPort(port: 0x3F8, gsi: 4)
    }

    /// vCPUs running at boot (MADT: Enabled) and the most there may be (the rest: Online Capable).
    public var bootVcpus: Int
    public var maxVcpus: Int
    /// The serial port, described as `\_SB.COM1`; nil when `--serial off`.
    public var com1: SerialPort?
    /// PCI ECAM base (MCFG, and reserved as a motherboard resource) and the buses it serves.
    public var pciMmconfigBase: UInt64 = Layout.pciMmconfigStart
    public var pciBuses: ClosedRange<UInt8> = 0...0
    /// The host bridge's 32-bit memory window (BARs), and optionally one above 4 GiB.
    public var pciMmio32: ClosedRange<UInt64> = Layout.pciMmio32Start...(Layout.pciMmio32Start + Layout.pciMmio32Size - 1)
    public var pciMmio64: ClosedRange<UInt64>? = nil
    public var lapicAddress: UInt64 = Layout.lapic
    public var ioapicAddress: UInt64 = Layout.ioapic
    /// The GED, the power button's events and the hotplug controllers (docs/hotplug.md); nil: none described.
    public var hotplug: AcpiHotplug?
    /// The byte-wide sleep-control/status and reset register (Devices/Acpi `AcpiPowerDevice`).
    public var powerRegisterPort: UInt16 = 0x600
    /// Where the RSDP goes; the other tables follow it and must end by `tablesEnd`.
    public var rsdpAddress: GuestAddress = Layout.acpiRsdp
    public var tablesEnd: UInt64 = Layout.acpiTablesEnd

    public init(bootVcpus: Int, maxVcpus: Int, com1: SerialPort? = .com1, hotplug: AcpiHotplug? = nil) {
        self.bootVcpus = bootVcpus
        self.maxVcpus = maxVcpus
        self.com1 = com1
        self.hotplug = hotplug
    }
}

/// The ACPI tables for one VM, each with the guest-physical address it goes to. Building is pure (no guest
/// memory, no KVM); `write(to:)` copies the bytes into guest RAM. Linux finds the RSDP through
/// `boot_params.acpi_rsdp_addr` or by scanning 0xE0000–0xFFFFF, follows the XSDT to the FADT, MADT and
/// MCFG, and the FADT's X_DSDT to the DSDT.
public struct AcpiTables: Equatable, Sendable {
    /// One table and where it goes.
    public struct Table: Equatable, Sendable {
        /// "RSD PTR " for the RSDP, else the 4-character table signature ("FACP" is the FADT, "APIC" the MADT).
        public let signature: String
        public let address: GuestAddress
        public let bytes: [UInt8]
    }

    /// SLP_TYP of the soft-off state S5: `\_S5_` says 5, so Linux writes 5 << 2 | SLP_EN = 0x34.
    public static let s5SleepType: UInt8 = 5
    /// What the OS writes to RESET_REG to reset the machine.
    public static let resetValue: UInt8 = 1
    /// The MADT uses Processor Local APIC structures, whose APIC ID is one byte (0xFF is the broadcast id).
    public static let maxVcpus = 254
    /// KVM's I/O APIC has 24 pins: GSIs 0–23.
    static let ioapicPins: UInt32 = 24

    public let rsdp: Table
    /// XSDT, FADT, MADT, MCFG, DSDT, in address order after the RSDP.
    public let tables: [Table]
    /// The E820 entries that keep Linux from using what the tables occupy or describe as RAM:
    /// - the table area [RSDP, `tablesEnd`) — by default the BIOS area 0xE0000–0xFFFFF — as reserved
    ///   (not "ACPI reclaimable": the RSDP and the DSDT stay in use);
    /// - the whole 256 MiB ECAM segment at the MMCONFIG base, as reserved, as Cloud Hypervisor and
    ///   Firecracker do: Linux also accepts an MCFG area that E820 reserves.
    public let e820Reservations: [E820Entry]

    /// The RSDP and then every table.
    public var all: [Table] { [rsdp] + tables }

    /// Builds and places the tables for `config`.
    public static func build(_ config: AcpiConfig) throws(BootError) -> AcpiTables {
        try validate(config)
        let madt = Madt.build(bootVcpus: config.bootVcpus, maxVcpus: config.maxVcpus,
                              lapicAddress: UInt32(config.lapicAddress), ioapicAddress: UInt32(config.ioapicAddress))
        let mcfg = SystemTables.mcfg(base: config.pciMmconfigBase, segment: 0, buses: config.pciBuses)
        let dsdt = Dsdt.build(config)

        // Placement: RSDP, XSDT, FADT, MADT, MCFG, DSDT, each 16-byte aligned.
        let sizes = [SystemTables.xsdtSize(entries: 3), SystemTables.fadtSize, madt.count, mcfg.count, dsdt.count]
        var next = align16(config.rsdpAddress.rawValue + UInt64(SystemTables.rsdpSize))
        var addresses: [GuestAddress] = []
        for size in sizes {
            addresses.append(GuestAddress(next))
            next = align16(next + UInt64(size))
        }
        guard next <= config.tablesEnd else {
            throw .acpi("they need \(next - config.rsdpAddress.rawValue) bytes from \(config.rsdpAddress), "
                        + "but only \(config.tablesEnd - config.rsdpAddress.rawValue) are set aside")
        }
        let (xsdtAt, fadtAt, madtAt, mcfgAt, dsdtAt) = (addresses[0], addresses[1], addresses[2], addresses[3], addresses[4])
        let fadt = SystemTables.fadt(dsdt: dsdtAt, powerPort: config.powerRegisterPort, resetValue: resetValue)
        let xsdt = SystemTables.xsdt(entries: [fadtAt, madtAt, mcfgAt])
        return AcpiTables(
            rsdp: Table(signature: "RSD PTR ", address: config.rsdpAddress, bytes: SystemTables.rsdp(xsdt: xsdtAt)),
            tables: [
                Table(signature: "XSDT", address: xsdtAt, bytes: xsdt),
                Table(signature: "FACP", address: fadtAt, bytes: fadt),
                Table(signature: "APIC", address: madtAt, bytes: madt),
                Table(signature: "MCFG", address: mcfgAt, bytes: mcfg),
                Table(signature: "DSDT", address: dsdtAt, bytes: dsdt),
            ],
            e820Reservations: [
                E820Entry(address: config.rsdpAddress.rawValue, size: config.tablesEnd - config.rsdpAddress.rawValue, kind: .reserved),
                E820Entry(address: config.pciMmconfigBase, size: Layout.pciMmconfigSize, kind: .reserved),
            ])
    }

    /// Writes every table into guest memory.
    public func write(to memory: GuestMemory) throws(BootError) {
        do {
            for table in all { try memory.write(bytes: table.bytes, at: table.address) }
        } catch {
            throw .memory(error)
        }
    }

    /// Rejects what the tables cannot say, each with one line.
    static func validate(_ config: AcpiConfig) throws(BootError) {
        guard (1...maxVcpus).contains(config.maxVcpus) else {
            throw .acpi("\(config.maxVcpus) vCPUs; the MADT describes 1 to \(maxVcpus)")
        }
        guard (1...config.maxVcpus).contains(config.bootVcpus) else {
            throw .acpi("\(config.bootVcpus) boot vCPUs; it must be 1 to max (\(config.maxVcpus))")
        }
        guard config.pciMmio32.upperBound <= UInt64(UInt32.max) else {
            throw .acpi("the 32-bit PCI window ends at \(hex(config.pciMmio32.upperBound)), above 4 GiB")
        }
        if let high = config.pciMmio64, high.lowerBound <= UInt64(UInt32.max) {
            throw .acpi("the 64-bit PCI window starts at \(hex(high.lowerBound)), below 4 GiB")
        }
        let ecamBusesEnd = UInt64(config.pciBuses.upperBound) << 20 + (1 << 20)
        guard config.pciMmconfigBase & 0xF_FFFF == 0, config.pciMmconfigBase <= (1 << 32) - ecamBusesEnd else {
            throw .acpi("MMCONFIG at \(hex(config.pciMmconfigBase)) must be 1 MiB aligned and below 4 GiB")
        }
        guard config.lapicAddress <= UInt64(UInt32.max), config.ioapicAddress <= UInt64(UInt32.max) else {
            throw .acpi("the local APIC and I/O APIC addresses must be below 4 GiB")
        }
        if let com1 = config.com1, com1.gsi >= ioapicPins {
            throw .acpi("serial port interrupt GSI \(com1.gsi); the I/O APIC has GSIs 0-\(ioapicPins - 1)")
        }
        if let hotplug = config.hotplug {
            guard hotplug.gedGsi < ioapicPins else {
                throw .acpi("GED interrupt GSI \(hotplug.gedGsi); the I/O APIC has GSIs 0-\(ioapicPins - 1)")
            }
            guard (0...AcpiHotplug.maxMemorySlots).contains(hotplug.memorySlots) else {
                throw .acpi("\(hotplug.memorySlots) memory hotplug slots; at most \(AcpiHotplug.maxMemorySlots)")
            }
            let blocks = [hotplug.gedAddress, hotplug.pciAddress, hotplug.cpuAddress, hotplug.memoryAddress]
            guard blocks.allSatisfy({ $0 <= UInt64(UInt32.max) - 0x1000 }) else {
                throw .acpi("the hotplug register blocks must be below 4 GiB")
            }
        }
        guard config.rsdpAddress.rawValue & 0xF == 0, config.rsdpAddress.rawValue < config.tablesEnd else {
            throw .acpi("the RSDP address \(config.rsdpAddress) must be 16-byte aligned and below \(hex(config.tablesEnd))")
        }
    }

    static func align16(_ value: UInt64) -> UInt64 { (value + 15) & ~15 }
}
