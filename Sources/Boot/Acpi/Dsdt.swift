/// The Differentiated System Description Table (ACPI 6.5 §5.2.11.1): the AML namespace. As ASL:
///
/// ```
/// DefinitionBlock ("", "DSDT", 2, "ACTVMM", "ACTVDSDT", 1) {
///     Scope (\_SB) {
///         Device (PCI0) { … }   // the PCI host bridge and its windows
///         Device (MBRD) { … }   // motherboard resources: the ECAM area
///         Device (COM1) { … }   // only when the serial port exists
///         Device (PWRB) { … }   // the power button, pressed through the GED
///         // with AcpiConfig.hotplug (docs/hotplug.md): PHPR, PRES before PCI0 (which gains slots S001–S031,
///         // DVNT, PCNT); CPUS, MHPC and GED after PWRB
///     }
///     Name (_S5, Package () { 5 })
/// }
/// ```
enum Dsdt {
    /// Revision 2 and later: AML integers are 64 bits wide (§5.2.11.1).
    static let revision: UInt8 = 2

    static func build(_ config: AcpiConfig) -> [UInt8] {
        var devices: [[UInt8]] = []
        if let hotplug = config.hotplug {
            devices += [PciHotplugAml.controller(hotplug), CpuHotplugAml.controller(hotplug)]
        }
        devices += [pciRoot(config), motherboardResources(config)]
        if let com1 = config.com1 { devices.append(serialPort(com1)) }
        devices.append(powerButton())
        if let hotplug = config.hotplug {
            devices += [CpuHotplugAml.processors(maxVcpus: config.maxVcpus), MemoryHotplugAml.controller(hotplug),
                        GedAml.device(hotplug)]
        }
        var t = SdtBuilder(signature: "DSDT", revision: revision)
        t.append(bytes: Aml.scope("\\_SB_", devices))
        t.append(bytes: sleepState(AcpiTables.s5SleepType))
        return t.finish()
    }

    /// `\_SB.PCI0`, the PCI Express root bridge (§6.1.5 `_HID`, §6.1.2 `_CID`, §6.5.6 `_SEG`, §6.5.5 `_BBN`,
    /// §6.1.12 `_UID`, §6.2.2 `_CRS`):
    /// - `_HID` PNP0A08 (PCI Express root bridge) and `_CID` PNP0A03 (PCI root bridge); segment 0, base bus
    ///   = the first bus, `_UID` 0;
    /// - `_CRS`: the bus range; I/O ports 0xCF8–0xCFF (configuration mechanism #1, consumed by the bridge);
    ///   the I/O windows 0x0000–0x0CF7 and 0x0D00–0xFFFF; the 32-bit memory window the VMM assigns BARs in;
    ///   and the 64-bit window when one is configured.
    /// No `_PRT`: the devices have no INTx pins (MSI-X only). No `_OSC`: the OS keeps no native PCIe
    /// services to negotiate (no AER or PME; hotplug, with `AcpiConfig.hotplug`, is ACPI's: `PciHotplugAml`).
    static func pciRoot(_ config: AcpiConfig) -> [UInt8] {
        var windows = [
            AmlResource.wordBusNumber(UInt16(config.pciBuses.lowerBound)...UInt16(config.pciBuses.upperBound)),
            AmlResource.io(min: 0xCF8, max: 0xCF8, alignment: 1, length: 8),
            AmlResource.wordIO(0x0000...0x0CF7),
            AmlResource.wordIO(0x0D00...0xFFFF),
            AmlResource.dwordMemory(UInt32(config.pciMmio32.lowerBound)...UInt32(config.pciMmio32.upperBound)),
        ]
        if let high = config.pciMmio64 { windows.append(AmlResource.qwordMemory(high)) }
        return Aml.device("PCI0", [
            Aml.name("_HID", Aml.eisaId("PNP0A08")),
            Aml.name("_CID", Aml.eisaId("PNP0A03")),
            Aml.name("_SEG", Aml.integer(0)),
            Aml.name("_BBN", Aml.integer(UInt64(config.pciBuses.lowerBound))),
            Aml.name("_UID", Aml.integer(0)),
            Aml.name("_CRS", Aml.resourceTemplate(windows)),
        ] + (config.hotplug == nil ? [] : PciHotplugAml.slotTerms()))
    }

    /// `\_SB.MBRD`, PNP0C02 "motherboard resources": the ECAM area of the MCFG buses (and, with hotplug,
    /// the GED's event byte). Linux uses MMCONFIG
    /// only for areas it finds reserved here (or in the E820 map), as the PCI Firmware Specification
    /// asks (§4.1.2); Cloud Hypervisor describes the same device.
    static func motherboardResources(_ config: AcpiConfig) -> [UInt8] {
        let busCount = UInt64(config.pciBuses.count)
        let base = config.pciMmconfigBase + UInt64(config.pciBuses.lowerBound) << 20
        var ranges = [AmlResource.memory32Fixed(base: UInt32(base), length: UInt32(busCount << 20))]
        if let hotplug = config.hotplug {  // the GED's event byte: the GED's own _CRS may hold interrupts only
            ranges.append(AmlResource.memory32Fixed(base: UInt32(hotplug.gedAddress), length: UInt32(AcpiHotplug.gedSize)))
        }
        return Aml.device("MBRD", [
            Aml.name("_HID", Aml.eisaId("PNP0C02")),
            Aml.name("_UID", Aml.integer(0)),
            Aml.name("_CRS", Aml.resourceTemplate(ranges)),
        ])
    }

    /// `\_SB.COM1`, PNP0501 (16550A-compatible serial port): 8 I/O ports and an edge-triggered, active-high
    /// interrupt. The `Interrupt` descriptor names the GSI explicitly; on a hardware-reduced platform this
    /// `_CRS` is how Linux learns the port's interrupt.
    static func serialPort(_ port: AcpiConfig.SerialPort) -> [UInt8] {
        Aml.device("COM1", [
            Aml.name("_HID", Aml.eisaId("PNP0501")),
            Aml.name("_UID", Aml.integer(0)),
            Aml.name("_CRS", Aml.resourceTemplate([
                AmlResource.io(min: port.port, max: port.port, alignment: 1, length: 8),
                AmlResource.interrupt([port.gsi]),
            ])),
        ])
    }

    /// `\_SB.PWRB`, PNP0C0C: the control-method power button the FADT's PWR_BUTTON flag announces (§4.8.2.2.1.2).
    /// Pressing it means a `Notify (PWRB, 0x80)` from AML, which on a hardware-reduced platform runs from
    /// a Generic Event Device's `_EVT` (ACPI0013, §5.6.9): `GedAml`, present with `AcpiConfig.hotplug`.
    static func powerButton() -> [UInt8] {
        Aml.device("PWRB", [
            Aml.name("_HID", Aml.eisaId("PNP0C0C")),
            Aml.name("_UID", Aml.integer(0)),
        ])
    }

    /// `\_S5_`, the soft-off state (§7.4.2): a package whose first integer is the SLP_TYP value the OS writes
    /// to SLEEP_CONTROL_REG (bits 2–4) with SLP_EN (bit 5) to power off. One element is enough: ACPICA reads
    /// SLP_TYPa from it (and a hardware-reduced platform has no SLP_TYPb register).
    static func sleepState(_ sleepType: UInt8) -> [UInt8] {
        Aml.name("_S5_", Aml.package([Aml.integer(UInt64(sleepType))]))
    }
}
