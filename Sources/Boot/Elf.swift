/// A parsed ELF64 x86-64 executable: its entry point and the segments to load. Parsing is pure (bytes in,
/// value out) and checks every field it relies on, so a malformed file is an error, never a crash.
public struct Elf64Image: Equatable, Sendable {
    public struct Segment: Equatable, Sendable {
        /// Guest-physical load address (`p_paddr`).
        public let physicalAddress: UInt64
        public let fileOffset: Int
        public let fileSize: Int
        public let memorySize: UInt64
    }

    public let entry: UInt64
    public let segments: [Segment]
    /// The PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`), if the image has one: a 32-bit protected-mode
    /// entry that takes an `hvm_start_info` in EBX.
    public let pvhEntry: UInt32?

    static let maxProgramHeaders = 256

    /// Parses `bytes`; `reason` strings name the field that is wrong.
    public init(bytes: [UInt8]) throws(ElfError) {
        func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * $1) } }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * $1) } }

        guard bytes.count >= 64 else { throw ElfError("file is \(bytes.count) bytes, shorter than an ELF header") }
        guard bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
            throw ElfError("no ELF magic")
        }
        guard bytes[4] == 2 else { throw ElfError("ELF class \(bytes[4]), expected 2 (64-bit)") }
        guard bytes[5] == 1 else { throw ElfError("data encoding \(bytes[5]), expected 1 (little-endian)") }
        let type = u16(16), machine = u16(18)
        guard type == 2 else { throw ElfError("e_type \(type), expected 2 (ET_EXEC)") }
        guard machine == 62 else { throw ElfError("e_machine \(machine), expected 62 (x86-64)") }
        entry = u64(24)
        let phoff = u64(32)
        let phentsize = Int(u16(54)), phnum = Int(u16(56))
        guard phentsize == 56 else { throw ElfError("e_phentsize \(phentsize), expected 56") }
        guard phnum >= 1, phnum <= Self.maxProgramHeaders else { throw ElfError("e_phnum \(phnum) out of range 1…\(Self.maxProgramHeaders)") }
        guard phoff <= UInt64(bytes.count), UInt64(bytes.count) - phoff >= UInt64(phnum * phentsize) else {
            throw ElfError("program headers at offset \(phoff) run past the end of the file")
        }
        var segments: [Segment] = []
        var pvhEntry: UInt32?
        for index in 0..<phnum {
            let h = Int(phoff) + index * phentsize
            if u32(h) == 4 {  // PT_NOTE
                let offset = u64(h + 8), size = u64(h + 32)
                guard offset <= UInt64(bytes.count), UInt64(bytes.count) - offset >= size else {
                    throw ElfError("note segment \(index) runs past the end of the file")
                }
                pvhEntry = pvhEntry ?? Self.findPvhEntry(bytes, from: Int(offset), to: Int(offset + size))
                continue
            }
            guard u32(h) == 1 else { continue }  // PT_LOAD only
            let offset = u64(h + 8), paddr = u64(h + 24), filesz = u64(h + 32), memsz = u64(h + 40)
            guard filesz <= memsz else { throw ElfError("segment \(index): p_filesz \(filesz) > p_memsz \(memsz)") }
            guard offset <= UInt64(bytes.count), UInt64(bytes.count) - offset >= filesz else {
                throw ElfError("segment \(index): file range \(offset)+\(filesz) runs past the end of the file")
            }
            guard paddr.addingReportingOverflow(memsz).overflow == false else {
                throw ElfError("segment \(index): address range overflows")
            }
            segments.append(Segment(physicalAddress: paddr, fileOffset: Int(offset), fileSize: Int(filesz), memorySize: memsz))
        }
        guard !segments.isEmpty else { throw ElfError("no PT_LOAD segment") }
        self.segments = segments
        self.pvhEntry = pvhEntry
    }

    /// Scans ELF notes in [start, end) for Xen's PHYS32_ENTRY (name "Xen", type 18). Malformed notes end
    /// the scan (the image is then simply not PVH-capable).
    static func findPvhEntry(_ bytes: [UInt8], from start: Int, to end: Int) -> UInt32? {
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * $1) } }
        var cursor = start
        while cursor + 12 <= end {
            let nameSize = Int(u32(cursor)), descSize = Int(u32(cursor + 4)), type = u32(cursor + 8)
            let name = cursor + 12
            let desc = name + ((nameSize + 3) & ~3)
            let next = desc + ((descSize + 3) & ~3)
            guard nameSize <= 256, descSize <= 4096, next <= end, next > cursor else { return nil }
            if type == 18, nameSize == 4, bytes[name] == 0x58, bytes[name + 1] == 0x65, bytes[name + 2] == 0x6E,
               descSize >= 4 {
                return u32(desc)  // the low 32 bits (Linux emits a .quad)
            }
            cursor = next
        }
        return nil
    }
}

/// A malformed ELF file; the text says which field.
public struct ElfError: Error, Equatable, Sendable {
    public let reason: String
    init(_ reason: String) { self.reason = reason }
}
