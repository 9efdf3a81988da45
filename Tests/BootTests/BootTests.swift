import ActorVmm
@testable import Boot
import CKvm
import Testing

@Suite struct BootParamsTests {
    @Test func offsetsMatchTheKernelHeader() {
        #expect(BootParams.size == ckvm_boot_params_size())
        #expect(BootParams.cmdLinePtrOffset == ckvm_boot_params_cmd_line_ptr_offset())
        #expect(BootParams.extCmdLinePtrOffset == ckvm_boot_params_ext_cmd_line_ptr_offset())
        #expect(BootParams.e820EntriesOffset == ckvm_boot_params_e820_entries_offset())
        #expect(BootParams.e820TableOffset == ckvm_boot_params_e820_table_offset())
        #expect(BootParams.bootFlagOffset == ckvm_boot_params_boot_flag_offset())
        #expect(BootParams.headerOffset == ckvm_boot_params_header_offset())
        #expect(BootParams.typeOfLoaderOffset == ckvm_boot_params_type_of_loader_offset())
        #expect(BootParams.cmdlineSizeOffset == ckvm_boot_params_cmdline_size_offset())
        #expect(BootParams.loadFlagsOffset == ckvm_boot_params_loadflags_offset())
    }

    @Test func zeroPageFields() throws {
        var params = BootParams()
        params.setCommandLine(at: GuestAddress(0x20000), size: 12)
        try params.setE820([E820Entry(address: 0, size: 0x9FC00, kind: .ram),
                            E820Entry(address: 0x100000, size: 0x3F00000, kind: .ram)])
        let b = params.bytes
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
        #expect(b[0x1FE] == 0x55 && b[0x1FF] == 0xAA)
        #expect(u32(0x202) == 0x5372_6448)
        #expect(b[0x210] == 0xFF)
        #expect(u32(0x228) == 0x20000)
        #expect(u32(0x238) == 12)
        #expect(b[0x1E8] == 2)
        #expect(u64(0x2D0 + 20) == 0x100000 && u64(0x2D0 + 28) == 0x3F00000 && u32(0x2D0 + 36) == 1)
    }

    @Test func e820SplitsLowMemoryAndTheHole() throws {
        let small = try GuestMemory(layout: Layout.ramRegions(size: 64 << 20))
        #expect(BootParams.e820Map(for: small) == [
            E820Entry(address: 0, size: 0x9FC00, kind: .ram),
            E820Entry(address: 0x100000, size: (64 << 20) - 0x100000, kind: .ram),
        ])
        let regions = Layout.ramRegions(size: 4 << 30)
        #expect(regions.count == 2)
        #expect(regions[0].size == 0xC000_0000 && regions[1].start == GuestAddress(1 << 32) && regions[1].size == 1 << 30)
    }

    @Test func tooManyE820EntriesIsAnError() {
        var params = BootParams()
        let entries = (0..<129).map { E820Entry(address: UInt64($0) << 20, size: 4096, kind: .ram) }
        #expect(throws: BootError.self) { try params.setE820(entries) }
    }
}

@Suite struct LongModeTests {
    @Test func gdtEntriesMatchTheKnownEncodings() {
        // The same values Firecracker and Linux's boot code use.
        #expect(LongMode.gdt[2] == 0x00AF_9B00_0000_FFFF)
        #expect(LongMode.gdt[3] == 0x00CF_9300_0000_FFFF)
        #expect(LongMode.gdt[4] == 0x008F_8B00_0000_FFFF)
        let code = SegmentState(gdtEntry: LongMode.gdt[2], selector: 0x10)
        #expect(code.long && code.present && code.type == 0xB && code.limit == 0xFFFF_FFFF && !code.defaultSize32)
    }

    /// The boot GDT is whole in guest memory: the IDT written after it does not overwrite its TSS entry
    /// (a guest that reads its GDT — `lsl`, `lar`, `ltr` — finds every descriptor the registers were loaded from).
    @Test func theBootGdtIsWholeInMemory() throws {
        #expect(Layout.gdt.rawValue + UInt64(LongMode.gdt.count * 8) <= Layout.idt.rawValue)
        #expect(Layout.gdt.rawValue + UInt64(Pvh.gdt.count * 8) <= Layout.idt.rawValue)
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        try LongMode.writeStructures(to: memory)
        for (index, entry) in LongMode.gdt.enumerated() {
            #expect(try memory.read(UInt64.self, at: GuestAddress(Layout.gdt.rawValue + UInt64(index * 8))) == entry, "GDT entry \(index)")
        }
    }

    @Test func pageTablesIdentityMapFourGiB() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        try LongMode.writeStructures(to: memory)
        #expect(try memory.read(UInt64.self, at: Layout.pml4) == 0xA003)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0xA000 + 3 * 8)) == 0xE003)
        // The 2 MiB page that holds 0xFEA00000: directory 3, entry 501.
        #expect(try memory.read(UInt64.self, at: GuestAddress(0xE000 + 501 * 8)) == 0xFEA0_0083)
        let state = LongMode.bootState(entry: 0x200000)
        #expect(state.cr0 & 0x8000_0001 == 0x8000_0001 && state.efer == 0x500 && state.rsi == 0x7000)
    }
}

@Suite struct ElfTests {
    /// A minimal valid ELF64 x86-64 executable with one PT_LOAD segment.
    static func elf(entry: UInt64 = 0x200000, paddr: UInt64 = 0x200000, filesz: UInt64 = 16, memsz: UInt64 = 32,
                    machine: UInt16 = 62, phnum: UInt16 = 1) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 64 + 56 + 16)
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } } }
        b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 2; b[5] = 1; b[6] = 1
        put(UInt16(2), 16); put(machine, 18); put(UInt32(1), 20); put(entry, 24); put(UInt64(64), 32)
        put(UInt16(64), 52); put(UInt16(56), 54); put(phnum, 56)
        put(UInt32(1), 64); put(UInt64(120), 64 + 8); put(paddr, 64 + 16); put(paddr, 64 + 24)
        put(filesz, 64 + 32); put(memsz, 64 + 40)
        for i in 0..<16 { b[120 + i] = UInt8(i + 1) }
        return b
    }

    @Test func parsesAValidImage() throws {
        let image = try Elf64Image(bytes: Self.elf())
        #expect(image.entry == 0x200000)
        #expect(image.segments == [.init(physicalAddress: 0x200000, fileOffset: 120, fileSize: 16, memorySize: 32)])
    }

    @Test(arguments: [
        ([UInt8](repeating: 0, count: 10), "shorter than an ELF header"),
        ([UInt8](repeating: 0x41, count: 200), "no ELF magic"),
        (ElfTests.elf(machine: 3), "e_machine 3, expected 62 (x86-64)"),
        (ElfTests.elf(filesz: 64, memsz: 32), "p_filesz 64 > p_memsz 32"),
        (ElfTests.elf(filesz: 4096, memsz: 4096), "runs past the end of the file"),
        (ElfTests.elf(phnum: 40), "program headers at offset 64 run past the end of the file"),
        (ElfTests.elf(paddr: UInt64.max - 8), "address range overflows"),
    ])
    func rejectsMalformedFiles(bytes: [UInt8], reason: String) {
        do {
            _ = try Elf64Image(bytes: bytes)
            Issue.record("accepted a malformed ELF")
        } catch {
            #expect(error.reason.contains(reason), "\(error.reason)")
        }
    }

    @Test func loaderPlacesSegmentsZeroesBssAndRejectsMisfits() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        let bytes = Self.elf()
        try memory.write(bytes: [UInt8](repeating: 0xEE, count: 32), at: GuestAddress(0x200000))
        let setup = try KernelLoader.load(image: try Elf64Image(bytes: bytes), bytes: bytes, path: "t", cmdline: "hello", memory: memory)
        #expect(setup.bootState.rip == 0x200000)
        #expect(try memory.readBytes(at: GuestAddress(0x200000), count: 16) == Array(1...16))
        #expect(try memory.readBytes(at: GuestAddress(0x200010), count: 16) == [UInt8](repeating: 0, count: 16))
        #expect(try memory.readCString(at: Layout.cmdline, limit: 100) == Array("hello".utf8))

        let outside = Self.elf(entry: 0x2000000, paddr: 0x2000000)
        #expect(throws: BootError.self) {
            try KernelLoader.load(image: try Elf64Image(bytes: outside), bytes: outside, path: "t", cmdline: "", memory: memory)
        }
        let low = Self.elf(entry: 0x1000, paddr: 0x1000)
        #expect(throws: BootError.self) {
            try KernelLoader.load(image: try Elf64Image(bytes: low), bytes: low, path: "t", cmdline: "", memory: memory)
        }
        let badEntry = Self.elf(entry: 0x300000)
        #expect(throws: BootError.self) {
            try KernelLoader.load(image: try Elf64Image(bytes: badEntry), bytes: badEntry, path: "t", cmdline: "", memory: memory)
        }
        #expect(throws: BootError.cmdlineTooLong(length: 2048, capacity: 2048)) {
            try KernelLoader.writeBootStructures(cmdline: String(repeating: "x", count: 2048), memory: memory)
        }
    }
}
