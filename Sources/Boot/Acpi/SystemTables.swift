import ActorVmm

/// The fixed-layout tables: RSDP, XSDT, FADT and MCFG. Offsets and section numbers are those of the ACPI
/// Specification 6.5 (and the PCI Firmware Specification 3.3 for MCFG).
enum SystemTables {
    // MARK: RSDP (§5.2.5.3, Table 5.3)

    static let rsdpSize = 36

    /// The Root System Description Pointer, revision 2: "RSD PTR ", a checksum over the first 20 bytes
    /// (the ACPI 1.0 part), OEMID, Revision 2, RsdtAddress 0 (there is no RSDT: revision 2 means the
    /// OS uses the XSDT), Length 36, XsdtAddress, an extended checksum over all 36 bytes, 3 reserved.
    static func rsdp(xsdt: GuestAddress) -> [UInt8] {
        var b: [UInt8] = []
        b.appendAscii("RSD PTR ", count: 8)
        b.append(0)                                  // 8: checksum of bytes 0..<20
        b.appendAscii(AcpiOem.id, count: 6)          // 9: OEMID
        b.append(2)                                  // 15: revision (ACPI 2.0 and later)
        b.appendLittleEndian(UInt32(0))              // 16: RsdtAddress
        b.appendLittleEndian(UInt32(rsdpSize))       // 20: Length
        b.appendLittleEndian(xsdt.rawValue)          // 24: XsdtAddress
        b.append(0)                                  // 32: extended checksum
        b += [0, 0, 0]                               // 33: reserved
        b[8] = acpiChecksum(b[0..<20])
        b[32] = acpiChecksum(b)
        return b
    }

    // MARK: XSDT (§5.2.8, Table 5.7)

    /// The Extended System Description Table: the header, then one 64-bit address per table. The DSDT is
    /// not listed: the FADT points at it.
    static func xsdt(entries: [GuestAddress]) -> [UInt8] {
        var t = SdtBuilder(signature: "XSDT", revision: 1)
        for entry in entries { t.append(entry.rawValue) }
        return t.finish()
    }

    static func xsdtSize(entries: Int) -> Int { SdtBuilder.headerSize + 8 * entries }

    // MARK: FADT (§5.2.9, Table 5.9)

    /// FADT revision 6, minor version 5: ACPI 6.5's 276-byte layout.
    static let fadtSize = 276
    static let fadtRevision: UInt8 = 6
    static let fadtMinorVersion: UInt8 = 5

    /// Field offsets in the FADT (Table 5.9).
    enum FadtOffset {
        static let iapcBootArch = 109
        static let flags = 112
        static let resetReg = 116
        static let resetValue = 128
        static let minorVersion = 131
        static let xDsdt = 140
        static let sleepControlReg = 244
        static let sleepStatusReg = 256
        static let hypervisorVendorIdentity = 268
    }

    /// IA-PC Boot Architecture Flags (§5.2.9.3, Table 5.11).
    enum BootArch {
        /// Bit 1, "8042": clear. The i8042 model only implements the reset line, so Linux must not probe it
        /// as a keyboard controller (Cloud Hypervisor leaves it clear too). Reset goes through RESET_REG.
        static let i8042: UInt16 = 1 << 1
        /// Bit 2: no VGA hardware; the OS must not probe for it.
        static let vgaNotPresent: UInt16 = 1 << 2
        /// Bit 3, "MSI not supported": clear. virtio-pci devices use MSI-X.
        static let msiNotSupported: UInt16 = 1 << 3
        /// Bit 4: the OS must not enable PCIe ASPM (there are no PCIe links to manage).
        static let pcieAspmControls: UInt16 = 1 << 4
        /// Bit 5: there is no CMOS RTC (ActorVMM has no CMOS device yet), so Linux registers none.
        static let cmosRtcNotPresent: UInt16 = 1 << 5
        static let actorVmm = vgaNotPresent | pcieAspmControls | cmosRtcNotPresent
    }

    /// Fixed Feature Flags (§5.2.9, Table 5.10).
    enum Flags {
        /// Bit 4, PWR_BUTTON: set — the power button, if any, is a control method device (PNP0C0C).
        static let powerButton: UInt32 = 1 << 4
        /// Bit 5, SLP_BUTTON: set — there is no fixed-feature sleep button.
        static let sleepButton: UInt32 = 1 << 5
        /// Bit 10, RESET_REG_SUP: RESET_REG/RESET_VALUE reset the system.
        static let resetRegisterSupported: UInt32 = 1 << 10
        /// Bit 20, HW_REDUCED_ACPI (§4.1): no fixed ACPI hardware (PM1 blocks, PM timer, GPE blocks, SCI);
        /// sleep and wake go through SLEEP_CONTROL_REG and SLEEP_STATUS_REG.
        static let hardwareReduced: UInt32 = 1 << 20
        static let actorVmm = powerButton | sleepButton | resetRegisterSupported | hardwareReduced
    }

    /// The Fixed ACPI Description Table of a hardware-reduced platform. What it says:
    /// - FIRMWARE_CTRL, X_FIRMWARE_CTRL 0: no FACS (optional when HW_REDUCED_ACPI is set, §5.2.10).
    /// - DSDT (32-bit) 0 and X_DSDT = `dsdt`: the 64-bit field is the one the OS uses.
    /// - Offsets 46–108 and 148–232 (SCI, SMI, PM1/PM2/PM timer/GPE blocks, C-state latencies) are 0:
    ///   the OS ignores them on a hardware-reduced platform (§5.2.9).
    /// - RESET_REG: byte I/O register `powerPort`, RESET_VALUE 1 (Table 5.9: the reset register's bit width
    ///   must be 8 and its bit offset 0).
    /// - SLEEP_CONTROL_REG, SLEEP_STATUS_REG: the same byte at `powerPort` (§4.8.3.7, §4.8.3.8). The OS
    ///   writes SLP_TYP << 2 | SLP_EN (bit 5) to enter a sleep state; the status reads 0 (no wake events).
    /// - Hypervisor Vendor Identity: "ACTORVMM".
    static func fadt(dsdt: GuestAddress, powerPort: UInt16, resetValue: UInt8) -> [UInt8] {
        var t = SdtBuilder(signature: "FACP", revision: fadtRevision)
        t.appendZeros(fadtSize - t.count)
        t.set(BootArch.actorVmm, at: FadtOffset.iapcBootArch)
        t.set(Flags.actorVmm, at: FadtOffset.flags)
        t.set(GenericAddress.ioByte(powerPort), at: FadtOffset.resetReg)
        t.set(resetValue, at: FadtOffset.resetValue)
        t.set(fadtMinorVersion, at: FadtOffset.minorVersion)
        t.set(dsdt.rawValue, at: FadtOffset.xDsdt)
        t.set(GenericAddress.ioByte(powerPort), at: FadtOffset.sleepControlReg)
        t.set(GenericAddress.ioByte(powerPort), at: FadtOffset.sleepStatusReg)
        t.setAscii("ACTORVMM", at: FadtOffset.hypervisorVendorIdentity, count: 8)
        return t.finish()
    }

    // MARK: MCFG (PCI Firmware Specification 3.3 §4.1.2; signature reserved by ACPI 6.5 Table 5.6)

    /// The PCI Express memory-mapped configuration space table: the header, 8 reserved bytes, then one
    /// 16-byte allocation: ECAM base address, PCI segment group, start and end bus, 4 reserved bytes.
    /// Bus `b` of the allocation is at `base + b << 20`.
    static func mcfg(base: UInt64, segment: UInt16, buses: ClosedRange<UInt8>) -> [UInt8] {
        var t = SdtBuilder(signature: "MCFG", revision: 1)
        t.appendZeros(8)
        t.append(base)
        t.append(segment)
        t.append(buses.lowerBound)
        t.append(buses.upperBound)
        t.appendZeros(4)
        return t.finish()
    }
}
