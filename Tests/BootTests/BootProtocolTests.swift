import ActorVmm
@testable import Boot
import Glibc
import Testing

/// Crafted kernels for the three boot protocols.
enum Kernels {
    static func put<T: FixedWidthInteger>(_ v: T, _ o: Int, _ b: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } }
    }

    /// A bzImage: one setup sector, a 4 KiB "kernel", protocol 2.15, 64-bit entry.
    static func bzImage(version: UInt16 = 0x020F, xloadflags: UInt16 = 1, initSize: UInt32 = 0x10000,
                        initrdMax: UInt32 = 0x37FF_FFFF) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 1024 + 4096)
        b[0x1F1] = 1
        b[0x1FE] = 0x55; b[0x1FF] = 0xAA
        b[0x200] = 0xEB; b[0x201] = 0x6A  // jmp over the header: header ends at 0x26C
        for (i, c) in "HdrS".utf8.enumerated() { b[0x202 + i] = c }
        put(version, 0x206, &b)
        b[0x211] = 1  // LOADED_HIGH
        put(initrdMax, 0x22C, &b)
        put(UInt32(0x20_0000), 0x230, &b)
        put(xloadflags, 0x236, &b)
        put(UInt32(2047), 0x238, &b)
        put(initSize, 0x260, &b)
        for i in 0..<4096 { b[1024 + i] = UInt8(truncatingIfNeeded: i) }
        return b
    }

    /// An ELF vmlinux with a Xen PHYS32_ENTRY note.
    static func pvhElf(entry32: UInt32 = 0x200010) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 64 + 2 * 56 + 24 + 32)
        b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 2; b[5] = 1; b[6] = 1
        put(UInt16(2), 16, &b); put(UInt16(62), 18, &b); put(UInt32(1), 20, &b); put(UInt64(0xFFFF_FFFF_8100_0000), 24, &b)
        put(UInt64(64), 32, &b); put(UInt16(64), 52, &b); put(UInt16(56), 54, &b); put(UInt16(2), 56, &b)
        let note = 64 + 2 * 56, code = note + 24
        // PT_LOAD: 32 bytes at 0x200000
        put(UInt32(1), 64, &b); put(UInt64(code), 64 + 8, &b); put(UInt64(0x200000), 64 + 24, &b)
        put(UInt64(32), 64 + 32, &b); put(UInt64(32), 64 + 40, &b)
        // PT_NOTE: "Xen\0", type 18, 8-byte desc
        put(UInt32(4), 120, &b); put(UInt64(note), 120 + 8, &b); put(UInt64(24), 120 + 32, &b)
        put(UInt32(4), note, &b); put(UInt32(8), note + 4, &b); put(UInt32(18), note + 8, &b)
        b[note + 12] = 0x58; b[note + 13] = 0x65; b[note + 14] = 0x6E
        put(UInt64(entry32), note + 16, &b)
        return b
    }

    static func write(_ bytes: [UInt8], name: String) -> String {
        let path = "/tmp/actor-vmm-boot-\(getpid())-\(name)"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        return path
    }
}

@Suite struct BzImageTests {
    @Test func parsesTheSetupHeader() throws {
        let image = try BzImage(bytes: Kernels.bzImage())
        #expect(image.protocolVersion == 0x020F && image.kernelOffset == 1024 && image.cmdlineSize == 2047)
        #expect(image.setupHeader.count == 0x26C - 0x1F1)
    }

    @Test(arguments: [
        (Kernels.bzImage(version: 0x0206), "boot protocol 2.6 is too old"),
        (Kernels.bzImage(xloadflags: 0), "no 64-bit entry point"),
        (Array(Kernels.bzImage().prefix(0x300)), "points past the end of the file"),
    ])
    func rejectsWhatItCannotBoot(bytes: [UInt8], reason: String) {
        do {
            _ = try BzImage(bytes: bytes)
            Issue.record("accepted")
        } catch {
            #expect(error.reason.contains(reason), "\(error.reason)")
        }
    }

    @Test func loadsAt1MiBWithTheHeaderInTheZeroPage() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 64 << 20)])
        let kernel = Kernels.write(Kernels.bzImage(), name: "bz")
        let initrd = Kernels.write([UInt8](repeating: 0x77, count: 5000), name: "initrd")
        defer { unlink(kernel); unlink(initrd) }
        let setup = try KernelLoader.load(.init(kernelPath: kernel, initramfsPath: initrd, cmdline: "console=ttyS0", acpi: AcpiConfig(bootVcpus: 1, maxVcpus: 1)), memory: memory)
        #expect(setup.bootProtocol == .bzImage)
        #expect(setup.bootState.rip == 0x100200 && setup.bootState.rsi == 0x7000)
        #expect(try memory.readBytes(at: GuestAddress(0x100000), count: 4) == [0, 1, 2, 3])
        let zero = try memory.readBytes(at: Layout.zeroPage, count: 4096)
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(zero[o + $1]) << (8 * $1) } }
        #expect(u32(0x202) == 0x5372_6448 && zero[0x210] == 0xFF && u32(0x238) == 2047)
        // The initramfs sits at the top of RAM, page aligned, and the zero page says where.
        let initramfs = try #require(setup.initramfs)
        #expect(initramfs.size == 5000 && initramfs.address == ((64 << 20) - 5000) & ~0xFFF)
        #expect(u32(0x218) == UInt32(initramfs.address) && u32(0x21C) == 5000)
        #expect(try memory.readBytes(at: GuestAddress(initramfs.address), count: 2) == [0x77, 0x77])
        #expect(u32(0x070) == 0xE0000)  // acpi_rsdp_addr
    }

    @Test func initramfsHonoursInitrdAddrMax() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 64 << 20)])
        let kernel = Kernels.write(Kernels.bzImage(initrdMax: 0x1FF_FFFF), name: "bz2")
        let initrd = Kernels.write([UInt8](repeating: 1, count: 4096), name: "initrd2")
        defer { unlink(kernel); unlink(initrd) }
        let setup = try KernelLoader.load(.init(kernelPath: kernel, initramfsPath: initrd, cmdline: ""), memory: memory)
        #expect(setup.initramfs?.address == 0x200_0000 - 4096)
    }

    @Test func kernelLargerThanRamIsAClearError() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 4 << 20)])
        let kernel = Kernels.write(Kernels.bzImage(initSize: 16 << 20), name: "bz3")
        defer { unlink(kernel) }
        #expect(throws: BootError.self) { try KernelLoader.load(.init(kernelPath: kernel, cmdline: ""), memory: memory) }
    }
}

@Suite struct PvhTests {
    @Test func findsTheNoteAndBuildsStartInfo() throws {
        let image = try Elf64Image(bytes: Kernels.pvhElf())
        #expect(image.pvhEntry == 0x200010)
        let memory = try GuestMemory(layout: [(GuestAddress(0), 64 << 20)])
        let kernel = Kernels.write(Kernels.pvhElf(), name: "pvh")
        let initrd = Kernels.write([UInt8](repeating: 9, count: 100), name: "pvh-initrd")
        defer { unlink(kernel); unlink(initrd) }
        let setup = try KernelLoader.load(.init(kernelPath: kernel, initramfsPath: initrd, cmdline: "quiet", acpi: AcpiConfig(bootVcpus: 1, maxVcpus: 1)), memory: memory)
        #expect(setup.bootProtocol == .pvh)
        #expect(setup.bootState.rip == 0x200010 && setup.bootState.rbx == 0x6000)
        #expect(setup.bootState.cr0 & 0x8000_0001 == 1 && setup.bootState.efer == 0)  // protected mode, no paging
        #expect(setup.bootState.code.long == false && setup.bootState.code.defaultSize32)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x6000)) == Pvh.magic)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x600C)) == 1)          // nr_modules
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x6018)) == 0x20000)    // cmdline_paddr
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x6020)) == 0xE0000)    // rsdp_paddr
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x6030)) == 4)          // memmap_entries: RAM ×2, ACPI, MMCONFIG
        let module = try memory.read(UInt64.self, at: GuestAddress(0x6040))
        let moduleSize = try memory.read(UInt64.self, at: GuestAddress(0x6048))
        #expect(module == setup.initramfs?.address && moduleSize == 100)
        #expect(try memory.readCString(at: Layout.cmdline, limit: 100) == Array("quiet".utf8))
    }

    @Test func malformedNotesAreIgnoredNotFatal() throws {
        var bytes = Kernels.pvhElf()
        bytes[64 + 2 * 56] = 0xFF  // namesz 255: runs past the note segment
        let image = try Elf64Image(bytes: bytes)
        #expect(image.pvhEntry == nil)
    }
}
