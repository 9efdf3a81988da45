import ActorVmm
@testable import Boot

/// 4 MiB of guest RAM for the loaders (a kernel at 1 MiB; larger images must be refused, not overrun).
let kernelMemory = guardedMemory([(GuestAddress(0), 0x400000)])

/// Loads a parsed ELF image as `KernelLoader.load` does after reading the file. Invariants: a setup or a
/// BootError with a one-line message; the entry point (or PVH entry) lies in guest RAM.
func loadElf(_ bytes: [UInt8], cmdline: String) {
    let image: Elf64Image
    do { image = try Elf64Image(bytes: bytes) } catch { return }
    do {
        let setup = try KernelLoader.load(image: image, bytes: bytes,
                                          request: .init(kernelPath: "fuzz", cmdline: cmdline), memory: kernelMemory)
        let entry = setup.bootProtocol == .pvh ? UInt64(image.pvhEntry ?? 0) : image.entry
        guard kernelMemory.contains(GuestAddress(entry), count: 1) else { finding("entry \(entry) outside guest RAM") }
        guard setup.kernelEnd <= kernelMemory.totalSize else { finding("kernel end \(setup.kernelEnd) beyond guest RAM") }
    } catch {
        guard !error.description.contains("\n") else { finding("multi-line error: \(error)") }
    }
}

/// The ELF parser and loader on raw file bytes.
func kernelElfTarget(_ bytes: [UInt8]) {
    loadElf(bytes, cmdline: "console=ttyS0")
}

/// A well-formed ELF64 header whose program headers (PT_LOAD and PT_NOTE, with Xen notes) and contents come
/// from the input, so the fuzzer spends its time in segment placement and PVH note parsing.
func kernelPvhTarget(_ bytes: [UInt8]) {
    var input = FuzzInput(bytes)
    let count = Int(input.byte() % 6) + 1
    var file = [UInt8](repeating: 0, count: 64 + 56 * count)
    func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { file[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
    file.replaceSubrange(0..<6, with: [0x7F, 0x45, 0x4C, 0x46, 2, 1])
    put(UInt16(2), at: 16); put(UInt16(62), at: 18)
    put(UInt64(0x100000) + UInt64(input.integer(UInt32.self) % 0x400000), at: 24)  // e_entry
    put(UInt64(64), at: 32); put(UInt16(56), at: 54); put(UInt16(count), at: 56)
    var body: [UInt8] = []
    var headers: [(type: UInt32, offset: UInt64, paddr: UInt64, filesz: UInt64, memsz: UInt64)] = []
    for _ in 0..<count {
        let kind = input.byte()
        if kind & 1 == 0 {  // a note segment: Xen notes, PHYS32_ENTRY among them
            var notes: [UInt8] = []
            for _ in 0..<Int(kind >> 1 & 3) + 1 {
                let raw = input.bool()
                let nameSize: UInt32 = raw ? input.integer() % 300 : 4
                let descSize: UInt32 = raw ? input.integer() % 5000 : 8
                let type: UInt32 = raw ? input.integer() : 18
                for word in [nameSize, descSize, type] { for i in 0..<4 { notes.append(UInt8(truncatingIfNeeded: word >> (8 * i))) } }
                notes += raw ? input.take(Int(input.byte())) : Array("Xen\0".utf8)
                let entry = UInt32(0x100000) + input.integer(UInt32.self) % 0x400000
                for i in 0..<8 { notes.append(i < 4 ? UInt8(truncatingIfNeeded: entry >> (8 * i)) : 0) }
            }
            headers.append((4, UInt64(body.count), 0, UInt64(notes.count) + UInt64(input.byte() % 8), 0))
            body += notes
        } else {
            let paddr = kind & 2 != 0 ? input.integer(UInt64.self) : 0x100000 + UInt64(input.integer(UInt32.self) % 0x400000)
            let data = input.take(Int(input.byte()))
            let memsz = UInt64(data.count) &+ (kind & 4 != 0 ? input.integer(UInt64.self) : UInt64(input.integer(UInt16.self)))
            headers.append((1, UInt64(body.count), paddr, UInt64(data.count), memsz))
            body += data
        }
    }
    let bodyStart = UInt64(file.count)
    for (i, h) in headers.enumerated() {
        let at = 64 + 56 * i
        put(h.type, at: at); put(bodyStart + h.offset, at: at + 8); put(h.paddr, at: at + 16); put(h.paddr, at: at + 24)
        put(h.filesz, at: at + 32); put(h.memsz, at: at + 40)
    }
    loadElf(file + body, cmdline: String(decoding: input.rest().prefix(3000), as: UTF8.self))
}

/// A bzImage: a setup header with the required magic and fields, the rest (sizes, flags, versions) and the
/// kernel from the input. Invariants: a setup or a BootError; the setup header copied into the zero page
/// never exceeds its place; the kernel end lies within guest RAM.
func kernelBzImageTarget(_ bytes: [UInt8]) {
    var input = FuzzInput(bytes)
    var file = [UInt8](repeating: 0, count: 0x400)
    for offset in 0x1F1..<0x270 { file[offset] = input.byte() }
    if input.bool() {  // usually keep the magic, so the fuzzer explores past it
        file[0x1FE] = 0x55; file[0x1FF] = 0xAA
        file.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
    }
    file += input.take(Int(input.integer(UInt16.self) % 0x2000))
    let image: BzImage
    do { image = try BzImage(bytes: file) } catch { return }
    guard image.setupHeader.count <= 0x7F + 0x100, image.kernelOffset < file.count else {
        finding("setup header \(image.setupHeader.count) bytes, kernel at \(image.kernelOffset) of \(file.count)")
    }
    do {
        let setup = try KernelLoader.loadBzImage(image, bytes: file, request: .init(kernelPath: "fuzz", cmdline: "console=ttyS0"),
                                                 memory: kernelMemory)
        guard setup.kernelEnd <= kernelMemory.totalSize else { finding("kernel end \(setup.kernelEnd) beyond guest RAM") }
    } catch {
        guard !error.description.contains("\n") else { finding("multi-line error: \(error)") }
    }
}
