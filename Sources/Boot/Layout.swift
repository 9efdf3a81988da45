import ActorVmm

/// Where things live in guest-physical memory on x86-64, grouped by range. Every fixed address is here.
public enum Layout {
    // MARK: Low memory: boot structures (below 1 MiB)

    /// The boot GDT (null, null, code 0x10, data 0x18, TSS 0x20 — the selectors Linux's 64-bit boot uses).
    public static let gdt = GuestAddress(0x500)
    /// The boot IDT (empty: the guest installs its own before enabling interrupts), right after the GDT's
    /// five entries (at 0x520, as in Firecracker whose GDT has four, it overwrote the TSS descriptor).
    public static let idt = GuestAddress(0x528)
    /// The initial stack pointer for the boot vCPU.
    public static let bootStack = GuestAddress(0x8FF0)
    /// The Linux `boot_params` "zero page"; its address goes in RSI.
    public static let zeroPage = GuestAddress(0x7000)
    /// Identity page tables: PML4, one PDPT, then four page directories of 2 MiB pages (the first 4 GiB).
    public static let pml4 = GuestAddress(0x9000)
    public static let pdpt = GuestAddress(0xA000)
    public static let pageDirectories = GuestAddress(0xB000)
    public static let identityMappedGiB: UInt64 = 4
    /// The kernel command line (NUL-terminated).
    public static let cmdline = GuestAddress(0x20000)
    /// Longest command line, including the terminating NUL (Linux's x86 COMMAND_LINE_SIZE).
    public static let cmdlineCapacity = 2048
    /// Start of the extended BIOS data area: RAM below it is usable, [EBDA, 1 MiB) is reserved.
    public static let ebdaStart: UInt64 = 0x9FC00
    /// The ACPI RSDP, in the BIOS area [0xE0000, 0x100000) that Linux also scans for it (ACPI 6.5
    /// §5.2.5.1); the other ACPI tables follow it, up to `acpiTablesEnd`. The E820 map marks the range
    /// reserved when tables are written.
    public static let acpiRsdp = GuestAddress(0xE_0000)
    public static let acpiTablesEnd: UInt64 = 0x10_0000
    /// Kernels load at or above 1 MiB.
    public static let highMemoryStart: UInt64 = 0x10_0000

    // MARK: The 32-bit device hole [3 GiB, 4 GiB)

    /// RAM below 4 GiB ends here; larger guests continue at 4 GiB.
    public static let lowRamEnd: UInt64 = 0xC000_0000
    /// The 32-bit PCI memory window the VMM assigns BARs in (docs/devices.md): 640 MiB from 3 GiB.
    public static let pciMmio32Start: UInt64 = 0xC000_0000
    public static let pciMmio32Size: UInt64 = 0x2800_0000
    /// PCI ECAM (MMCONFIG): 256 MiB reserved, 1 MiB per bus; only bus 0 is used.
    public static let pciMmconfigStart: UInt64 = 0xE800_0000
    public static let pciMmconfigSize: UInt64 = 0x1000_0000
    /// The ActorVMM test device's MMIO page (see Devices/TestDevice).
    public static let testDeviceMmio: UInt64 = 0xFEA0_0000
    /// The ACPI hotplug register blocks (docs/hotplug.md), one page each between the test device and the
    /// I/O APIC: the Generic Event Device's event byte, the PCI slot block (PCIU/PCID/B0EJ/PSEG), the
    /// CPU block (selector, status) and the memory block (selector, base, length, status).
    public static let acpiGed: UInt64 = 0xFEB0_0000
    public static let acpiPciHotplug: UInt64 = 0xFEB0_1000
    public static let acpiCpuHotplug: UInt64 = 0xFEB0_2000
    public static let acpiMemoryHotplug: UInt64 = 0xFEB0_3000
    public static let ioapic: UInt64 = 0xFEC0_0000
    public static let lapic: UInt64 = 0xFEE0_0000
    /// High RAM (for guests larger than 3 GiB) starts at 4 GiB.
    public static let highRamStart: UInt64 = 0x1_0000_0000

    /// Hot-added RAM (ACPI memory devices) is placed in 128 MiB blocks, Linux's memory block size on x86-64.
    public static let hotplugRamAlignment: UInt64 = 128 << 20

    /// Where hot-added RAM starts for a guest of `size` bytes of boot RAM: above all of it and above 4 GiB,
    /// 128 MiB aligned (docs/hotplug.md).
    public static func hotplugRamStart(bootRam size: UInt64) -> UInt64 {
        let end = ramRegions(size: size).map { $0.start.rawValue + $0.size }.max() ?? 0
        let start = max(end, highRamStart)
        return (start + hotplugRamAlignment - 1) / hotplugRamAlignment * hotplugRamAlignment
    }

    /// Where the virtio-mem device's region starts (docs/hotplug.md): above all boot RAM, above 4 GiB and above
    /// the ACPI memory hotplug area (`acpiHotplugSize` bytes from ``hotplugRamStart(bootRam:)``), 128 MiB
    /// aligned — never overlapping RAM, the ACPI area or the PCI windows below 4 GiB.
    public static func virtioMemStart(bootRam size: UInt64, acpiHotplugSize: UInt64) -> UInt64 {
        let start = hotplugRamStart(bootRam: size) + acpiHotplugSize
        return (start + hotplugRamAlignment - 1) / hotplugRamAlignment * hotplugRamAlignment
    }

    /// The RAM regions for a guest of `size` bytes: one region below the device hole, a second above 4 GiB.
    public static func ramRegions(size: UInt64) -> [(start: GuestAddress, size: UInt64)] {
        if size <= lowRamEnd { return [(GuestAddress(0), size)] }
        return [(GuestAddress(0), lowRamEnd), (GuestAddress(highRamStart), size - lowRamEnd)]
    }
}
