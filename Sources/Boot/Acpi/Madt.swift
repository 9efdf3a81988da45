/// The Multiple APIC Description Table (ACPI 6.5 §5.2.12): the interrupt controllers. KVM's in-kernel
/// irqchip gives every vCPU a local APIC at the same address, one I/O APIC with 24 pins, and a pair of
/// 8259s; GSI n is routed to I/O APIC pin n (`GsiRouter`).
enum Madt {
    /// Revision 5 (ACPI 6.3 and later) is the first with the "Online Capable" local APIC flag; Linux honours
    /// that flag only in tables of revision 5 or more.
    static let revision: UInt8 = 5

    /// MADT Flags (Table 5.20), bit 0 PCAT_COMPAT: "the system also has a PC-AT-compatible dual-8259
    /// setup", whose vectors the OS must mask. KVM's irqchip does include the 8259 pair, so the bit is set.
    /// (Cloud Hypervisor clears it; Linux ignores it either way, and on a hardware-reduced platform runs
    /// without the legacy PIC.)
    static let pcatCompat: UInt32 = 1 << 0

    /// Local APIC Flags (Table 5.23).
    enum LapicFlags {
        /// Bit 0: the processor is usable now.
        static let enabled: UInt32 = 1 << 0
        /// Bit 1: the processor is not enabled but can be brought online at run time (must be 0 when
        /// Enabled is set). Linux counts such CPUs as possible (hot-pluggable) CPUs.
        static let onlineCapable: UInt32 = 1 << 1
    }

    /// Interrupt controller structure types (Table 5.21) and their lengths.
    enum Entry {
        static let processorLocalApic: UInt8 = 0, processorLocalApicLength: UInt8 = 8
        static let ioApic: UInt8 = 1, ioApicLength: UInt8 = 12
        static let localApicNmi: UInt8 = 4, localApicNmiLength: UInt8 = 6
    }

    /// The MADT, in this order:
    /// - the header, Local Interrupt Controller Address = `lapicAddress`, Flags = PCAT_COMPAT;
    /// - one Processor Local APIC structure (§5.2.12.2) per vCPU 0..<`maxVcpus`: ACPI Processor UID and
    ///   APIC ID both equal the vCPU index (the APIC id KVM's CPUID reports for it); vCPUs below
    ///   `bootVcpus` are Enabled, the others Online Capable;
    /// - one I/O APIC structure (§5.2.12.3): I/O APIC ID 0, `ioapicAddress`, Global System Interrupt Base 0;
    /// - one Local APIC NMI structure (§5.2.12.7): every processor (UID 0xFF), flags 0 (conforming to the
    ///   bus), LINT1 — the NMI input of a PC.
    ///
    /// There are no Interrupt Source Overrides (§5.2.12.5). ISA IRQ n is GSI n here: the routing table maps
    /// GSI n to I/O APIC pin n, the in-kernel PIT included (its IRQ 0 is GSI 0, not the GSI 2 of PC
    /// chipsets), and the serial port's IRQ 4 is GSI 4. On a hardware-reduced platform Linux uses neither
    /// the PIT as its timer nor the 8259s, and takes each device's GSI, trigger and polarity from its
    /// `_CRS` (an `Interrupt` descriptor), so no identity override is needed either.
    /// The Processor Local APIC structure of vCPU `id` (ACPI Processor UID = APIC ID = `id`): Enabled, or
    /// Online Capable. A hot-pluggable processor object's `_MAT` is the Enabled form.
    static func localApic(id: Int, enabled: Bool) -> [UInt8] {
        var bytes = [Entry.processorLocalApic, Entry.processorLocalApicLength, UInt8(id), UInt8(id)]
        bytes.appendLittleEndian(enabled ? LapicFlags.enabled : LapicFlags.onlineCapable)
        return bytes
    }

    static func build(bootVcpus: Int, maxVcpus: Int, lapicAddress: UInt32, ioapicAddress: UInt32) -> [UInt8] {
        var t = SdtBuilder(signature: "APIC", revision: revision)
        t.append(lapicAddress)
        t.append(pcatCompat)
        for cpu in 0..<maxVcpus { t.append(bytes: localApic(id: cpu, enabled: cpu < bootVcpus)) }
        t.append(bytes: [Entry.ioApic, Entry.ioApicLength, 0, 0])
        t.append(ioapicAddress)
        t.append(UInt32(0))
        t.append(bytes: [Entry.localApicNmi, Entry.localApicNmiLength, 0xFF])
        t.append(UInt16(0))
        t.append(UInt8(1))
        return t.finish()
    }
}
