import ActorVmm
@testable import Boot
import Devices
import Foundation
import Testing

/// The hotplug part of the DSDT (the GED, PCI slots, processor objects, memory slots): the new AML
/// statements byte by byte, what `iasl -d` reads back, what `acpiexec` runs, and agreement with the
/// register blocks in Devices.
@Suite struct HotplugAmlTests {
    static let config = AcpiConfig(bootVcpus: 2, maxVcpus: 4, hotplug: AcpiHotplug(memorySlots: 4))

    static func ascii(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Expected bytes from ACPI 6.5 §20 (and what iasl emits for the same ASL).
    @Test func statementsEncodeAsTheSpecificationSays() {
        let a = Self.ascii
        #expect(Aml.store(Aml.arg(0), into: Aml.path("CSEL")) == [0x70, 0x68] + a("CSEL"))
        #expect(Aml.mutex("CPLK") == [0x5B, 0x01] + a("CPLK") + [0x00])
        #expect(Aml.acquire("CPLK") == [0x5B, 0x23] + a("CPLK") + [0xFF, 0xFF])
        #expect(Aml.release("CPLK") == [0x5B, 0x27] + a("CPLK"))
        #expect(Aml.notify("\\_SB.PWRB", Aml.integer(0x80)) == [0x86, 0x5C, 0x2E] + a("_SB_PWRB") + [0x0A, 0x80])
        #expect(Aml.ifThen(Aml.equal(Aml.local(0), Aml.integer(1)), [Aml.call("CSCN")])
                == [0xA0, 0x08, 0x93, 0x60, 0x01] + a("CSCN"))
        #expect(Aml.whileLoop(Aml.less(Aml.local(0), Aml.integer(4)), [Aml.add(Aml.local(0), Aml.integer(1), into: Aml.local(0))])
                == [0xA2, 0x09, 0x95, 0x60, 0x0A, 0x04, 0x72, 0x60, 0x01, 0x60])
        #expect(Aml.and(Aml.local(0), Aml.integer(2)) == [0x7B, 0x60, 0x0A, 0x02, 0x00], "no target: NullName")
        #expect(Aml.shiftLeft(Aml.integer(1), Aml.arg(0), into: Aml.path("B0EJ")) == [0x79, 0x01, 0x68] + a("B0EJ"))
        #expect(Aml.operationRegion("GDST", .systemMemory, offset: 0xFEB0_0000, length: 1)
                == [0x5B, 0x80] + a("GDST") + [0x00, 0x0C, 0x00, 0x00, 0xB0, 0xFE, 0x01])
        #expect(Aml.field("GDST", .byte, .writeAsZeros, [.named("GDAT", bits: 8)])
                == [0x5B, 0x81, 0x0B] + a("GDST") + [0x41] + a("GDAT") + [0x08])
        #expect(Aml.field("PRST", .dword, .preserve, [.reserved(bits: 32), .named("CDAT", bits: 32)])
                == [0x5B, 0x81, 0x0D] + a("PRST") + [0x03, 0x00, 0x20] + a("CDAT") + [0x20])
        #expect(Aml.createQWordField("MR64", byteIndex: 14, "MINL") == [0x8F] + a("MR64") + [0x0A, 0x0E] + a("MINL"))
        #expect(Aml.call("CTFY", [Aml.local(0), Aml.integer(3)]) == a("CTFY") + [0x60, 0x0A, 0x03])
    }

    @Test func withoutHotplugTheDsdtHasNoGed() throws {
        let dsdt = try AcpiTables.build(AcpiConfig(bootVcpus: 1, maxVcpus: 2)).table("DSDT").bytes
        let with = try AcpiTables.build(AcpiConfig(bootVcpus: 1, maxVcpus: 2, hotplug: AcpiHotplug())).table("DSDT").bytes
        func has(_ bytes: [UInt8], _ text: String) -> Bool {
            let needle = Self.ascii(text)
            return bytes.indices.dropLast(needle.count).contains { Array(bytes[$0..<($0 + needle.count)]) == needle }
        }
        #expect(!has(dsdt, "ACPI0013") && !has(dsdt, "PHPR") && !has(dsdt, "CPUS"))
        #expect(has(with, "ACPI0013") && has(with, "PHPR") && has(with, "CPUS") && has(with, "MHPC"))
        #expect(!has(with, "M000"), "no memory slots configured")
    }

    /// The DSDT's view of the register blocks is the devices' view.
    @Test func theDsdtAgreesWithTheRegisterBlocks() {
        typealias E = AcpiHotplug.Event
        #expect([E.cpuChanged, E.memoryChanged, E.pciChanged, E.powerButton]
                == [AcpiGed.Events.cpu, .memory, .pci, .powerButton].map(\.rawValue))
        #expect(AcpiHotplug.gedSize == AcpiGed.size)
        #expect(AcpiHotplug.pciSize == PciHotplugController.size)
        #expect(AcpiHotplug.cpuSize == CpuHotplugController.size)
        #expect(AcpiHotplug.memorySize == MemoryHotplugController.size)
        #expect(PciHotplugAml.slots == PciHotplugController.slots)
        let blocks = [Layout.acpiGed, Layout.acpiPciHotplug, Layout.acpiCpuHotplug, Layout.acpiMemoryHotplug]
        #expect(blocks.allSatisfy { $0 > Layout.testDeviceMmio && $0 + 0x1000 <= Layout.ioapic })
        #expect(blocks.allSatisfy { !(Layout.pciMmio32Start..<(Layout.pciMmconfigStart + Layout.pciMmconfigSize)).contains($0) })
    }

    @Test(.enabled(if: AcpiTools.iasl != nil, "\(AcpiTools.missing)"))
    func disassemblyShowsTheHotplugObjects() throws {
        let tables = try AcpiTables.build(Self.config)
        let directory = try AcpiTools.writeTables(tables, name: "hotplug")
        defer { AcpiTools.remove(directory) }
        _ = try AcpiTools.run(AcpiTools.iasl!, ["-d", "DSDT.dat"], in: directory)
        let dsl = try String(contentsOf: directory.appendingPathComponent("DSDT.dsl"), encoding: .utf8)
            .split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }.joined(separator: "\n")
        for text in [
            "Device (GED)", "Name (_HID, \"ACPI0013\"", "0xFEB00000, // Address Base\n0x00000001, // Address Length",
            // Linux's acpi-ged refuses a _CRS with anything but interrupts: the GED's holds GSI 5 alone.
            "Name (_CRS, ResourceTemplate () // _CRS: Current Resource Settings\n{\nInterrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n{\n0x00000005,\n}\n})\nOperationRegion (GDST",
            "Method (_EVT, 1, Serialized)", "Local0 = GDAT", "\\_SB.CPUS.CSCN ()", "\\_SB.MHPC.MSCN ()", "\\_SB.PCI0.PCNT ()",
            "Notify (\\_SB.PWRB, 0x80)",
            "Field (PCST, DWordAcc, NoLock, WriteAsZeros)\n{\nPCIU, 32,\nPCID, 32,\nB0EJ, 32,\nPSEG, 32\n}",
            "B0EJ = (One << Arg0)", "Device (S001)\n{\nName (_SUN, One)", "Name (_ADR, 0x001F0000)", "\\_SB.PHPR.PCEJ (_SUN, _SEG)",
            "DVNT (\\_SB.PHPR.PCIU, One)", "DVNT (\\_SB.PHPR.PCID, 0x03)", "Notify (S031, Arg1)",
            "Offset (0x04),\nCPEN, 1,\nCINS, 1,\nCRMV, 1,\nCEJ0, 1,", "Name (_HID, \"ACPI0010\"", "While ((Local0 < 0x04))",
            "Device (C003)", "Return (CSTA (0x03))", "0x00, 0x08, 0x03, 0x03, 0x01, 0x00, 0x00, 0x00", "CEJ0 (0x03)",
            "Device (M003)", "EisaId (\"PNP0C80\")", "Return (MCRS (0x03))", "MOST (0x03, Arg0, Arg1)",
            "MINL = ((MHBH << 0x20) | MHBL)", "MAXL = ((MINL + LENL) - One)",
        ] {
            #expect(dsl.contains(text), "DSDT.dsl lacks \(text)")
        }
    }

    /// ACPICA's interpreter runs every hotplug method the guest would; with its simulated (all-zero)
    /// registers a hot-pluggable vCPU and an empty memory slot report `_STA` 0.
    @Test(.enabled(if: AcpiTools.acpiexec != nil, "acpiexec is not installed (Debian: acpica-tools)"))
    func acpicaRunsTheHotplugMethods() throws {
        let tables = try AcpiTables.build(Self.config)
        let directory = try AcpiTools.writeTables(tables, name: "hotplug acpiexec")
        defer { AcpiTools.remove(directory) }
        let commands = ["evaluate \\_SB.GED._EVT 0", "evaluate \\_SB.CPUS.C003._STA", "evaluate \\_SB.CPUS.CSCN",
                        "evaluate \\_SB.CPUS.C003._EJ0 0", "evaluate \\_SB.PCI0.PCNT", "evaluate \\_SB.PCI0.S002._EJ0 0",
                        "evaluate \\_SB.MHPC.MSCN", "evaluate \\_SB.MHPC.M001._STA", "evaluate \\_SB.MHPC.M001._CRS",
                        "resources \\_SB.GED"].joined(separator: "; ")
        let result = try AcpiTools.run(AcpiTools.acpiexec!, ["-b", commands] + ["DSDT", "FACP", "APIC", "MCFG"].map { $0 + ".dat" },
                                       in: directory)
        #expect(result.status == 0, "\(result.output)")
        let output = result.output.split(separator: "\n")
            .filter { !$0.contains("rscalc-") && !$0.contains("rslist-") }
            .map { $0.split(separator: " ").joined(separator: " ") }.joined(separator: "\n")
        #expect(!output.contains("[00] 32-Bit Fixed Memory Range Resource\nWrite Protect : ReadWrite\nAddress : FEB00000"),
                "the GED's resources are its interrupt alone")
        for text in ["Evaluating \\_SB.CPUS.C003._STA\nEvaluation of \\_SB.CPUS.C003._STA returned object",
                     "Evaluating \\_SB.MHPC.M001._CRS\n", "[Buffer] Length 30 =", "Dword00 : 00000005",
                     "No object was returned from evaluation of \\_SB.PCI0.S002._EJ0"] {
            #expect(output.contains(text), "acpiexec output lacks \(text)")
        }
        #expect(output.components(separatedBy: "[Integer] = 0000000000000000").count == 3, "both _STA are 0")
        let problems = output.split(separator: "\n").filter { line in
            let l = line.lowercased()
            if l.contains("acpisetcurrentresources failed: ae_not_found") { return false }
            if l.contains("mismatch") { return !(l.contains("type 78") || l.contains("byte offset 01")) }
            return l.contains("error") || l.contains("warning") || l.contains("exception") || l.contains("fail")
        }
        #expect(problems.isEmpty, "\(problems)")
    }
}
