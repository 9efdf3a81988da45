import ActorVmm
@testable import Boot
import CKvm
import Devices
import Testing

/// Little-endian field readers over a table's bytes.
extension Array where Element == UInt8 {
    func u16(_ o: Int) -> UInt16 { UInt16(self[o]) | UInt16(self[o + 1]) << 8 }
    func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(self[o + $1]) << (8 * $1) } }
    func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(self[o + $1]) << (8 * $1) } }
    func ascii(_ o: Int, _ n: Int) -> String { String(decoding: self[o..<(o + n)], as: UTF8.self) }
    var byteSum: UInt8 { reduce(0, &+) }
}

extension AcpiTables {
    func table(_ signature: String) -> Table { tables.first { $0.signature == signature }! }
}

@Suite struct AcpiTablesTests {
    static let defaultTables = try! AcpiTables.build(AcpiConfig(bootVcpus: 2, maxVcpus: 4))

    @Test func everyTableHasAValidHeader() throws {
        let acpi = Self.defaultTables
        #expect(acpi.tables.map(\.signature) == ["XSDT", "FACP", "APIC", "MCFG", "DSDT"])
        for table in acpi.tables {
            let b = table.bytes
            #expect(b.ascii(0, 4) == table.signature)
            #expect(Int(b.u32(4)) == b.count, "\(table.signature) length")
            #expect(b.byteSum == 0, "\(table.signature) checksum")
            #expect(b.ascii(10, 6) == "ACTVMM")
            #expect(b.ascii(16, 8) == "ACTV" + table.signature)
            #expect(b.u32(24) == 1 && b.ascii(28, 4) == "AVMM")
        }
        #expect(acpi.table("XSDT").bytes[8] == 1)
        #expect(acpi.table("FACP").bytes[8] == 6)
        #expect(acpi.table("APIC").bytes[8] == 5)
        #expect(acpi.table("MCFG").bytes[8] == 1)
        #expect(acpi.table("DSDT").bytes[8] == 2)
    }

    @Test func rsdpPointsAtTheXsdt() {
        let acpi = Self.defaultTables
        let b = acpi.rsdp.bytes
        #expect(acpi.rsdp.address == GuestAddress(0xE0000))
        #expect(b.count == 36)
        #expect(b.ascii(0, 8) == "RSD PTR ")
        #expect(Array(b[0..<20]).byteSum == 0)       // the ACPI 1.0 checksum
        #expect(b.byteSum == 0)                      // the extended checksum
        #expect(b.ascii(9, 6) == "ACTVMM" && b[15] == 2)
        #expect(b.u32(16) == 0 && b.u32(20) == 36)
        #expect(b.u64(24) == acpi.table("XSDT").address.rawValue)
    }

    @Test func tablesArePlacedInTheBiosAreaWithoutOverlap() {
        let all = Self.defaultTables.all
        for (a, b) in zip(all, all.dropFirst()) {
            #expect(a.address.rawValue + UInt64(a.bytes.count) <= b.address.rawValue, "\(a.signature) overlaps \(b.signature)")
        }
        for table in all {
            #expect(table.address.rawValue % 16 == 0)
            #expect(table.address.rawValue >= 0xE0000 && table.address.rawValue + UInt64(table.bytes.count) <= 0x10_0000)
        }
    }

    @Test func xsdtListsFadtMadtMcfg() {
        let acpi = Self.defaultTables
        let xsdt = acpi.table("XSDT").bytes
        #expect(xsdt.count == 36 + 3 * 8)
        #expect([xsdt.u64(36), xsdt.u64(44), xsdt.u64(52)] == ["FACP", "APIC", "MCFG"].map { acpi.table($0).address.rawValue })
    }

    @Test func fadtDescribesAHardwareReducedPlatform() {
        let acpi = Self.defaultTables
        let f = acpi.table("FACP").bytes
        #expect(f.count == 276 && f[131] == 5)                          // revision 6.5
        #expect(f.u32(36) == 0 && f.u64(132) == 0)                     // no FACS
        #expect(f.u32(40) == 0 && f.u64(140) == acpi.table("DSDT").address.rawValue)  // X_DSDT only
        #expect(f.u32(112) == 1 << 20 | 1 << 10 | 1 << 5 | 1 << 4)     // HW_REDUCED, RESET_REG_SUP, buttons
        #expect(f.u16(109) == 1 << 2 | 1 << 4 | 1 << 5)                // no VGA, no ASPM, no CMOS RTC; no 8042
        let ioByte600: [UInt8] = [1, 8, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0]  // SystemIO, 8 bits, offset 0, byte access
        #expect(Array(f[116..<128]) == ioByte600)                      // RESET_REG
        #expect(f[128] == 1)                                           // RESET_VALUE
        #expect(Array(f[244..<256]) == ioByte600)                      // SLEEP_CONTROL_REG
        #expect(Array(f[256..<268]) == ioByte600)                      // SLEEP_STATUS_REG
        #expect(f.ascii(268, 8) == "ACTORVMM")
        #expect(f[46..<109].allSatisfy { $0 == 0 } && f[148..<244].allSatisfy { $0 == 0 })  // no fixed hardware
    }

    @Test(arguments: [(1, 1), (2, 4), (3, 3), (1, 254)])
    func madtListsEveryPossibleCpu(boot: Int, max: Int) throws {
        let m = try AcpiTables.build(AcpiConfig(bootVcpus: boot, maxVcpus: max)).table("APIC").bytes
        #expect(m.u32(36) == 0xFEE0_0000 && m.u32(40) == 1)           // LAPIC address, PCAT_COMPAT
        var offset = 44, cpus = 0, enabled = 0, ioapics = 0, nmis = 0
        while offset < m.count {
            let (type, length) = (m[offset], Int(m[offset + 1]))
            switch type {
            case 0:
                #expect(length == 8)
                #expect(Int(m[offset + 2]) == cpus && Int(m[offset + 3]) == cpus)  // UID and APIC ID
                let flags = m.u32(offset + 4)
                #expect(flags == (cpus < boot ? 1 : 2))                // Enabled, else Online Capable
                if flags == 1 { enabled += 1 }
                cpus += 1
            case 1:
                #expect(length == 12 && m[offset + 2] == 0 && m.u32(offset + 4) == 0xFEC0_0000 && m.u32(offset + 8) == 0)
                ioapics += 1
            case 4:
                #expect(length == 6 && m[offset + 2] == 0xFF && m.u16(offset + 3) == 0 && m[offset + 5] == 1)
                nmis += 1
            default:
                Issue.record("unexpected MADT entry type \(type)")
            }
            offset += length
        }
        #expect(offset == m.count)
        #expect(cpus == max && enabled == boot && ioapics == 1 && nmis == 1)
    }

    @Test func mcfgHasOneAllocationForBusZero() {
        let m = Self.defaultTables.table("MCFG").bytes
        #expect(m.count == 60)
        #expect(m.u64(36) == 0)                                        // reserved
        #expect(m.u64(44) == 0xE800_0000 && m.u16(52) == 0 && m[54] == 0 && m[55] == 0 && m.u32(56) == 0)
    }

    @Test func dsdtDescribesTheSerialPortOnlyWhenItExists() throws {
        func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
            let n = Array(needle.utf8)
            return haystack.indices.contains { i in i + n.count <= haystack.count && Array(haystack[i..<(i + n.count)]) == n }
        }
        let with = Self.defaultTables.table("DSDT").bytes
        let without = try AcpiTables.build(AcpiConfig(bootVcpus: 1, maxVcpus: 1, com1: nil)).table("DSDT").bytes
        for name in ["PCI0", "MBRD", "PWRB", "_S5_"] {
            #expect(contains(with, name) && contains(without, name), "\(name)")
        }
        #expect(contains(with, "COM1") && !contains(without, "COM1"))
        #expect(without.count < with.count)
    }

    @Test func theTablesAgreeWithThePowerDevice() {
        let config = AcpiConfig(bootVcpus: 1, maxVcpus: 1)
        #expect(UInt64(config.powerRegisterPort) == AcpiPowerDevice.port)
        #expect(UInt64(AcpiTables.s5SleepType) << 2 | 1 << 5 == AcpiPowerDevice.s5SleepValue)  // SLP_TYP, SLP_EN
        #expect(UInt64(AcpiTables.resetValue) == AcpiPowerDevice.resetValue)
        #expect(UInt64(AcpiConfig.SerialPort.com1.port) == Uart8250.port)
    }

    @Test func configurationsTheTablesCannotDescribeAreOneLineErrors() {
        var tooMany = AcpiConfig(bootVcpus: 1, maxVcpus: 255)
        var noBoot = AcpiConfig(bootVcpus: 0, maxVcpus: 2)
        var moreBootThanMax = AcpiConfig(bootVcpus: 3, maxVcpus: 2)
        var badIrq = AcpiConfig(bootVcpus: 1, maxVcpus: 1, com1: .init(port: 0x3F8, gsi: 24))
        var highWindow = AcpiConfig(bootVcpus: 1, maxVcpus: 1)
        highWindow.pciMmio32 = 0xC000_0000...0x1_0000_0000
        var lowHigh = AcpiConfig(bootVcpus: 1, maxVcpus: 1)
        lowHigh.pciMmio64 = 0x8000_0000...0x1_0000_0000
        var noRoom = AcpiConfig(bootVcpus: 1, maxVcpus: 200)
        noRoom.tablesEnd = 0xE0800
        var misaligned = AcpiConfig(bootVcpus: 1, maxVcpus: 1)
        misaligned.rsdpAddress = GuestAddress(0xE0004)
        var ecamMisaligned = AcpiConfig(bootVcpus: 1, maxVcpus: 1)
        ecamMisaligned.pciMmconfigBase = 0xE800_1000
        var ecamAbove4G = AcpiConfig(bootVcpus: 1, maxVcpus: 1)
        ecamAbove4G.pciMmconfigBase = 0xFFF0_0000
        ecamAbove4G.pciBuses = 0...1
        for config in [tooMany, noBoot, moreBootThanMax, badIrq, highWindow, lowHigh, noRoom, misaligned,
                       ecamMisaligned, ecamAbove4G] {
            do {
                _ = try AcpiTables.build(config)
                Issue.record("accepted \(config)")
            } catch {
                #expect(error.description.hasPrefix("ACPI tables: ") && !error.description.contains("\n"), "\(error)")
            }
        }
        tooMany.maxVcpus = 254; noBoot.bootVcpus = 1; moreBootThanMax.bootVcpus = 2; badIrq.com1 = .com1
        for config in [tooMany, noBoot, moreBootThanMax, badIrq] { #expect(throws: Never.self) { try AcpiTables.build(config) } }
    }

    @Test func aSixtyFourBitWindowIsOptional() throws {
        var config = AcpiConfig(bootVcpus: 1, maxVcpus: 1)
        let without = try AcpiTables.build(config).table("DSDT").bytes
        config.pciMmio64 = 0x1_0000_0000_0...0x1_FFFF_FFFF_F
        let with = try AcpiTables.build(config).table("DSDT").bytes
        #expect(with.count == without.count + 46)  // one QWord address space descriptor
    }
}

@Suite struct AcpiLoaderTests {
    @Test func rsdpOffsetMatchesTheKernelHeader() {
        #expect(BootParams.acpiRsdpAddrOffset == ckvm_boot_params_acpi_rsdp_addr_offset())
    }

    @Test func loaderWritesTablesSetsRsdpAndReservesE820() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 64 << 20)])
        let bytes = ElfTests.elf()
        let config = AcpiConfig(bootVcpus: 2, maxVcpus: 2)
        _ = try KernelLoader.load(image: try Elf64Image(bytes: bytes), bytes: bytes, path: "t", cmdline: "", memory: memory, acpi: config)
        let tables = try AcpiTables.build(config)
        for table in tables.all {
            #expect(try memory.readBytes(at: table.address, count: table.bytes.count) == table.bytes, "\(table.signature)")
        }
        let zeroPage = try memory.readBytes(at: Layout.zeroPage, count: BootParams.size)
        #expect(zeroPage.u64(0x070) == 0xE0000)
        let count = Int(zeroPage[0x1E8])
        let e820 = (0..<count).map { i in
            E820Entry(address: zeroPage.u64(0x2D0 + 20 * i), size: zeroPage.u64(0x2D0 + 20 * i + 8),
                      kind: E820Entry.Kind(rawValue: zeroPage.u32(0x2D0 + 20 * i + 16))!)
        }
        #expect(e820 == [
            E820Entry(address: 0, size: 0x9FC00, kind: .ram),
            E820Entry(address: 0xE0000, size: 0x20000, kind: .reserved),
            E820Entry(address: 0x10_0000, size: (64 << 20) - 0x10_0000, kind: .ram),
            E820Entry(address: 0xE800_0000, size: 0x1000_0000, kind: .reserved),
        ])
    }

    @Test func withoutAcpiTheZeroPageHasNoRsdpAndNoReservations() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        try KernelLoader.writeBootStructures(cmdline: "", memory: memory)
        let zeroPage = try memory.readBytes(at: Layout.zeroPage, count: BootParams.size)
        #expect(zeroPage.u64(0x070) == 0 && zeroPage[0x1E8] == 2)
        #expect(try memory.readBytes(at: GuestAddress(0xE0000), count: 8) == [UInt8](repeating: 0, count: 8))
    }
}
