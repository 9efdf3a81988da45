import Foundation
@testable import Boot
import Testing

/// ACPICA's own tools (Debian's `acpica-tools`; ACPICA is also Linux's ACPI core) read the tables:
/// `iasl -d` disassembles each one, `iasl` compiles the disassembly back, and `acpiexec` loads the
/// namespace and evaluates objects the way the kernel's interpreter would.
enum AcpiTools {
    static let iasl = find("iasl")
    static let acpiexec = find("acpiexec")
    static let missing = "iasl is not installed (Debian: apt-get install acpica-tools); the ACPI disassembly checks are skipped"

    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs `tool` in `directory` and returns its exit status and its stdout and stderr together.
    static func run(_ tool: String, _ arguments: [String], in directory: URL) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardInput = FileHandle.nullDevice
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// With `ACTOR_VMM_ACPI_DUMP=DIR` in the environment, the tables and their disassembly stay in
    /// DIR/<configuration> for reading; otherwise they go to a temporary directory that is removed.
    static let dumpDirectory = ProcessInfo.processInfo.environment["ACTOR_VMM_ACPI_DUMP"]

    /// A fresh directory holding each table as `<signature>.dat` ("RSDP.dat" for the RSDP).
    static func writeTables(_ tables: AcpiTables, name: String) throws -> URL {
        let directory = dumpDirectory.map { URL(fileURLWithPath: $0).appendingPathComponent(name) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("actor-vmm-acpi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for table in tables.all {
            try Data(table.bytes).write(to: directory.appendingPathComponent(fileName(table) + ".dat"))
        }
        return directory
    }

    static func remove(_ directory: URL) {
        if dumpDirectory == nil { try? FileManager.default.removeItem(at: directory) }
    }

    static func fileName(_ table: AcpiTables.Table) -> String { table.signature == "RSD PTR " ? "RSDP" : table.signature }

    /// Lines of tool output that report a problem.
    static func complaints(_ output: String) -> [Substring] {
        output.split(separator: "\n").filter { line in
            let l = line.lowercased()
            return (l.contains("error") || l.contains("warning") || l.contains("incorrect") || l.contains("invalid"))
                && !l.contains("0 errors, 0 warnings")
        }
    }
}

@Suite(.enabled(if: AcpiTools.iasl != nil, "\(AcpiTools.missing)"))
struct AcpiIaslTests {
    static let configurations: [(String, AcpiConfig)] = {
        var big = AcpiConfig(bootVcpus: 4, maxVcpus: 16, com1: nil)
        big.pciMmio64 = 0x100_0000_0000...0x1FF_FFFF_FFFF
        return [("1 vCPU, serial", AcpiConfig(bootVcpus: 1, maxVcpus: 1)),
                ("4 of 16 vCPUs, no serial, 64-bit window", big),
                ("2 of 4 vCPUs, hotplug, 4 memory slots", AcpiConfig(bootVcpus: 2, maxVcpus: 4, hotplug: AcpiHotplug(memorySlots: 4))),
                ("1 of 254 vCPUs, hotplug, no memory slots", AcpiConfig(bootVcpus: 1, maxVcpus: 254, hotplug: AcpiHotplug()))]
    }()

    /// `iasl -d` on every table: exit status 0, no error or warning, and a checksum it agrees with.
    @Test(arguments: configurations)
    func everyTableDisassemblesCleanly(name: String, config: AcpiConfig) throws {
        let tables = try AcpiTables.build(config)
        let directory = try AcpiTools.writeTables(tables, name: name)
        defer { AcpiTools.remove(directory) }
        for table in tables.tables {
            let file = AcpiTools.fileName(table)
            let result = try AcpiTools.run(AcpiTools.iasl!, ["-d", file + ".dat"], in: directory)
            #expect(result.status == 0, "\(name): iasl -d \(file): \(result.output)")
            #expect(AcpiTools.complaints(result.output).isEmpty, "\(name): iasl -d \(file): \(result.output)")
            let dsl = try String(contentsOf: directory.appendingPathComponent(file + ".dsl"), encoding: .utf8)
            #expect(AcpiTools.complaints(dsl).isEmpty, "\(name): \(file).dsl: \(AcpiTools.complaints(dsl))")
        }
    }

    /// What the disassembly says about the fields we set, in iasl's words.
    @Test func disassemblyShowsTheDescribedMachine() throws {
        let tables = try AcpiTables.build(AcpiConfig(bootVcpus: 2, maxVcpus: 3))
        let directory = try AcpiTools.writeTables(tables, name: "2 of 3 vCPUs")
        defer { AcpiTools.remove(directory) }
        func disassemble(_ file: String) throws -> String {
            _ = try AcpiTools.run(AcpiTools.iasl!, ["-d", file + ".dat"], in: directory)
            return try String(contentsOf: directory.appendingPathComponent(file + ".dsl"), encoding: .utf8)
                .split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
                .joined(separator: "\n")
        }
        let dsdt = try disassemble("DSDT")
        for text in ["Device (PCI0)", "EisaId (\"PNP0A08\")", "EisaId (\"PNP0A03\")", "Name (_SEG, Zero)", "Name (_BBN, Zero)",
                     "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,", "0xE7FFFFFF, // Range Maximum",
                     "0x0CF7, // Range Maximum", "0x0D00, // Range Minimum", "EisaId (\"PNP0C02\")",
                     "Memory32Fixed (ReadWrite,\n0xE8000000, // Address Base\n0x00100000, // Address Length",
                     "Device (COM1)", "EisaId (\"PNP0501\")", "0x03F8, // Range Minimum",
                     "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n{\n0x00000004,",
                     "Device (PWRB)", "EisaId (\"PNP0C0C\")", "Name (_S5, Package (0x01)", "0x05"] {
            #expect(dsdt.contains(text), "DSDT.dsl lacks \(text)")
        }
        let fadt = try disassemble("FACP")
        for text in ["Hardware Reduced (V5) : 1", "Reset Register Supported (V2) : 1", "Control Method Power Button (V1) : 1",
                     "8042 Present on ports 60/64 (V2) : 0", "VGA Not Present (V4) : 1", "CMOS RTC Not Present (V5) : 1",
                     "MSI Not Supported (V4) : 0", "Value to cause reset : 01", "FADT Minor Revision : 05",
                     "DSDT Address : \(String(format: "%016X", tables.table("DSDT").address.rawValue))"] {
            #expect(fadt.contains(text), "FACP.dsl lacks \(text)")
        }
        for register in ["Reset Register", "Sleep Control Register", "Sleep Status Register"] {
            #expect(fadt.contains("\(register) : [Generic Address Structure]\n[") , "FACP.dsl lacks \(register)")
        }
        #expect(fadt.components(separatedBy: "Space ID : 01 [SystemIO]\n").count == 4)
        #expect(fadt.components(separatedBy: "Address : 0000000000000600").count == 4)
        let madt = try disassemble("APIC")
        #expect(madt.components(separatedBy: "[Processor Local APIC]").count == 4)
        #expect(madt.components(separatedBy: "Processor Enabled : 1").count == 3)
        #expect(madt.components(separatedBy: "Runtime Online Capable : 1").count == 2)
        for text in ["Local Apic Address : FEE00000", "PC-AT Compatibility : 1", "[I/O APIC]", "Address : FEC00000",
                     "Interrupt : 00000000", "[Local APIC NMI]", "Processor ID : FF", "Interrupt Input LINT : 01"] {
            #expect(madt.contains(text), "APIC.dsl lacks \(text)")
        }
        let mcfg = try disassemble("MCFG")
        for text in ["Base Address : 00000000E8000000", "Segment Group Number : 0000", "Start Bus Number : 00", "End Bus Number : 00"] {
            #expect(mcfg.contains(text), "MCFG.dsl lacks \(text)")
        }
    }

    /// The disassembled ASL compiles again without a warning or remark; the data tables compile back to
    /// our bytes (except the creator fields and the checksum, which iasl sets to its own).
    @Test(arguments: configurations)
    func disassemblyCompilesBackToTheSameTables(name: String, config: AcpiConfig) throws {
        let tables = try AcpiTables.build(config)
        let directory = try AcpiTools.writeTables(tables, name: name + " round trip")
        defer { AcpiTools.remove(directory) }
        for table in tables.tables {
            let file = table.signature
            _ = try AcpiTools.run(AcpiTools.iasl!, ["-d", file + ".dat"], in: directory)
            let result = try AcpiTools.run(AcpiTools.iasl!, ["-p", file + "-again", file + ".dsl"], in: directory)
            // One remark is expected: MCRS (memory hotplug) makes its resource template per call, as QEMU and
            // Cloud Hypervisor do, so that the buffer it returns is its own ("Creation of named objects within
            // a method is highly inefficient").
            let remarks = config.hotplug.map { $0.memorySlots > 0 ? 1 : 0 } ?? 0
            let expected = "0 Errors, 0 Warnings, \(file == "DSDT" ? remarks : 0) Remarks"
            #expect(result.status == 0 && result.output.contains(expected), "\(name): iasl \(file).dsl: \(result.output)")
            if file == "DSDT", remarks > 0 {
                #expect(result.output.contains("Creation of named objects within a method") && result.output.contains("MCRS"))
            }
            guard file != "DSDT" else { continue }  // ASL is re-encoded; its meaning is checked above
            let again = [UInt8](try Data(contentsOf: directory.appendingPathComponent(file + "-again.aml")))
            func comparable(_ b: [UInt8]) -> [UInt8] { Array(b[0..<9] + b[10..<28] + b[36...]) }
            #expect(comparable(again) == comparable(table.bytes), "\(name): \(file) after a round trip through iasl")
        }
    }

    /// `iasl -d` does not take an RSDP alone (its first bytes are not a table header), so the RSDP goes the
    /// other way: iasl's data table compiler builds one from the field values, checksums included, and
    /// it must equal ours byte for byte.
    @Test func rsdpEqualsTheOneIaslCompiles() throws {
        let tables = try AcpiTables.build(AcpiConfig(bootVcpus: 1, maxVcpus: 1))
        let directory = try AcpiTools.writeTables(tables, name: "RSDP")
        defer { AcpiTools.remove(directory) }
        let source = """
            [0008] Signature : "RSD PTR "
            [0001] Checksum : 00
            [0006] Oem ID : "ACTVMM"
            [0001] Revision : 02
            [0004] RSDT Address : 00000000
            [0004] Length : 00000024
            [0008] XSDT Address : \(String(format: "%016llX", tables.table("XSDT").address.rawValue))
            [0001] Extended Checksum : 00
            [0003] Reserved : 000000

            """
        try source.write(to: directory.appendingPathComponent("RSDP-source.asl"), atomically: true, encoding: .utf8)
        let result = try AcpiTools.run(AcpiTools.iasl!, ["RSDP-source.asl"], in: directory)
        #expect(result.status == 0 && result.output.contains("0 Errors, 0 Warnings, 0 Remarks"), "\(result.output)")
        let compiled = [UInt8](try Data(contentsOf: directory.appendingPathComponent("RSDP-source.aml")))
        #expect(compiled == tables.rsdp.bytes)
    }

    /// `acpiexec` (ACPICA's interpreter, the one in Linux) loads the tables, runs the namespace
    /// initialisation and evaluates what the kernel asks for: `\_S5_` for power-off, the host bridge's
    /// `_HID`, and the devices' `_CRS` parsed into resources.
    @Test(.enabled(if: AcpiTools.acpiexec != nil, "acpiexec is not installed (Debian: acpica-tools)"))
    func acpicaInterpretsTheNamespace() throws {
        let tables = try AcpiTables.build(AcpiConfig(bootVcpus: 1, maxVcpus: 2))
        let directory = try AcpiTools.writeTables(tables, name: "acpiexec")
        defer { AcpiTools.remove(directory) }
        let commands = "evaluate \\_S5_; evaluate \\_SB.PCI0._HID; resources \\_SB.PCI0; resources \\_SB.MBRD; resources \\_SB.COM1"
        let result = try AcpiTools.run(AcpiTools.acpiexec!, ["-b", commands] + ["DSDT", "FACP", "APIC", "MCFG"].map { $0 + ".dat" },
                                       in: directory)
        #expect(result.status == 0, "\(result.output)")
        let output = result.output.split(separator: "\n")
            .filter { !$0.contains("rscalc-") && !$0.contains("rslist-") }  // ACPICA's resource-conversion trace
            .map { $0.split(separator: " ").joined(separator: " ") }.joined(separator: "\n")
        for text in ["4 Devices", "Evaluating \\_S5_", "[Package] Contains 1 Elements:\n[Integer] = 0000000000000005",
                     "Evaluating \\_SB.PCI0._HID", "[Integer] = 00000000080AD041",
                     "Resource Type : Bus Number Range", "Address Minimum : 0D00", "Address Maximum : E7FFFFFF",
                     "Address : E8000000\nAddress Length : 00100000",
                     "Address Minimum : 03F8", "Triggering : Edge\nPolarity : ActiveHigh", "Dword00 : 00000004"] {
            #expect(output.contains(text), "acpiexec output lacks \(text)")
        }
        // Expected noise: no device has _SRS; and when ACPICA re-encodes a template to compare it, it writes
        // the End Tag checksum as 0 ("no checksum"), where ours is the real one (ACPI 6.5 §6.4.2.9).
        let problems = output.split(separator: "\n").filter { line in
            let l = line.lowercased()
            if l.contains("acpisetcurrentresources failed: ae_not_found") { return false }
            if l.contains("mismatch") { return !(l.contains("type 78") || l.contains("byte offset 01")) }
            return l.contains("error") || l.contains("warning") || l.contains("exception") || l.contains("fail")
        }
        #expect(problems.isEmpty, "\(problems)")
    }
}
