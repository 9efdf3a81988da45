import ActorVmm

/// How the boot vCPU enters the kernel; chosen from the file's content.
public enum BootProtocol: String, Sendable, Equatable {
    /// An ELF64 image without a PVH note, entered at `e_entry` in 64-bit mode with RSI = zero page (the way
    /// Firecracker enters a vmlinux; the test guest boots this way).
    case elf64 = "ELF64, 64-bit entry"
    /// An ELF vmlinux with `XEN_ELFNOTE_PHYS32_ENTRY`, entered in 32-bit protected mode with EBX =
    /// `hvm_start_info`.
    case pvh = "PVH"
    /// A bzImage through the 64-bit boot protocol: entered at load address + 0x200 with RSI = zero page.
    case bzImage = "bzImage, 64-bit boot protocol"
}

/// What the loader produced: where the boot vCPU starts, and what it placed.
public struct BootSetup: Sendable, Equatable {
    public let bootState: VcpuBootState
    public let kernelEnd: UInt64
    public let bootProtocol: BootProtocol
    /// Where the initramfs was placed (guest-physical address, size), if any.
    public let initramfs: Initramfs?

    public struct Initramfs: Sendable, Equatable {
        public let address: UInt64
        public let size: UInt64
    }
}

/// Loads a kernel (ELF64, PVH vmlinux or bzImage) and an optional initramfs into guest memory and writes
/// the structures its boot protocol needs, returning the boot vCPU's register state. Boot code sees only
/// `GuestMemory`, never KVM.
public enum KernelLoader {
    /// Where a bzImage's protected-mode kernel is loaded (`code32_start`'s default).
    public static let bzImageLoadAddress: UInt64 = 0x10_0000

    public struct Request: Sendable {
        public var kernelPath: String
        public var initramfsPath: String?
        public var cmdline: String
        /// ACPI tables to write (their RSDP goes in the zero page or `hvm_start_info`); nil: none.
        public var acpi: AcpiConfig?
        /// Parameters appended to the command line when the kernel boots through a Linux protocol (bzImage
        /// or PVH): the host compatibility mode's workarounds. Other ELF payloads get the command line as is.
        public var linuxParameters: [String]
        public init(kernelPath: String, initramfsPath: String? = nil, cmdline: String, acpi: AcpiConfig? = nil,
                    linuxParameters: [String] = []) {
            self.kernelPath = kernelPath; self.initramfsPath = initramfsPath; self.cmdline = cmdline; self.acpi = acpi
            self.linuxParameters = linuxParameters
        }

        /// The command line for a Linux boot protocol.
        var linuxCommandLine: String {
            ([cmdline] + linuxParameters).filter { !$0.isEmpty }.joined(separator: " ")
        }
    }

    /// Loads `request.kernelPath`, choosing the protocol from its content.
    public static func load(_ request: Request, memory: GuestMemory) throws(BootError) -> BootSetup {
        let path = request.kernelPath
        let bytes = try readWholeFile(path, limit: memory.totalSize)
        if BzImage.matches(bytes) {
            let image: BzImage
            do { image = try BzImage(bytes: bytes) } catch { throw .notElf64(path: path, reason: error.reason) }
            return try loadBzImage(image, bytes: bytes, request: request, memory: memory)
        }
        let image: Elf64Image
        do {
            image = try Elf64Image(bytes: bytes)
        } catch {
            throw .notElf64(path: path, reason: error.reason + " (expected an ELF64 vmlinux or a bzImage)")
        }
        return try load(image: image, bytes: bytes, request: request, memory: memory)
    }

    /// The ELF64 entry (`Request` without an initramfs), kept for callers that only have a path.
    public static func loadElfKernel(path: String, cmdline: String, memory: GuestMemory,
                                     acpi: AcpiConfig? = nil) throws(BootError) -> BootSetup {
        try load(Request(kernelPath: path, cmdline: cmdline, acpi: acpi), memory: memory)
    }

    /// Places a parsed ELF image (PVH when it has the note, else the 64-bit entry); split out so tests can
    /// feed crafted images.
    public static func load(image: Elf64Image, bytes: [UInt8], path: String, cmdline: String,
                            memory: GuestMemory, acpi: AcpiConfig? = nil) throws(BootError) -> BootSetup {
        try load(image: image, bytes: bytes, request: Request(kernelPath: path, cmdline: cmdline, acpi: acpi), memory: memory)
    }

    static func load(image: Elf64Image, bytes: [UInt8], request: Request, memory: GuestMemory) throws(BootError) -> BootSetup {
        let path = request.kernelPath
        var kernelEnd: UInt64 = 0
        for segment in image.segments {
            let start = segment.physicalAddress
            guard start >= Layout.highMemoryStart else {
                throw .badSegment(path: path, reason: "segment at \(hex(start)) is below 1 MiB, where boot structures live")
            }
            try place(bytes, from: segment.fileOffset, count: segment.fileSize, zeroTo: segment.memorySize,
                      at: start, path: path, memory: memory)
            kernelEnd = max(kernelEnd, start + segment.memorySize)
        }
        let initramfs = try loadInitramfs(request.initramfsPath, above: kernelEnd, below: Layout.lowRamEnd, memory: memory)
        let commandLine = image.pvhEntry == nil ? request.cmdline : request.linuxCommandLine
        let cmdline = try writeCommandLine(commandLine, capacity: Layout.cmdlineCapacity, memory: memory)
        let acpi = try writeAcpi(request.acpi, memory: memory)

        if let pvhEntry = image.pvhEntry {
            guard memory.contains(GuestAddress(UInt64(pvhEntry)), count: 1) else {
                throw .badSegment(path: path, reason: "PVH entry point \(hex(pvhEntry)) is outside guest RAM")
            }
            let pieces = try Pvh.startInfo(cmdline: cmdline, module: initramfs.map { ($0.address, $0.size) },
                                           rsdp: acpi.rsdp, memoryMap: BootParams.e820Map(for: memory, reserving: acpi.reserved))
            try write(pieces + [(Layout.gdt, gdtBytes(Pvh.gdt)), (Layout.idt, [UInt8](repeating: 0, count: 8))], memory: memory)
            return BootSetup(bootState: Pvh.bootState(entry: pvhEntry), kernelEnd: kernelEnd, bootProtocol: .pvh, initramfs: initramfs)
        }
        guard image.segments.contains(where: { $0.physicalAddress <= image.entry && image.entry < $0.physicalAddress + $0.memorySize }) else {
            throw .badSegment(path: path, reason: "entry point \(hex(image.entry)) is outside every loaded segment")
        }
        var params = BootParams()
        try writeZeroPage(&params, cmdline: cmdline, cmdlineLength: commandLine.utf8.count + 1,
                          initramfs: initramfs, acpi: acpi, memory: memory)
        return BootSetup(bootState: LongMode.bootState(entry: image.entry), kernelEnd: kernelEnd, bootProtocol: .elf64, initramfs: initramfs)
    }

    /// The 64-bit boot protocol (boot.rst, "64-bit Boot Protocol"): the protected-mode kernel at 1 MiB,
    /// the setup header copied into the zero page, entry at load address + 0x200 in long mode.
    static func loadBzImage(_ image: BzImage, bytes: [UInt8], request: Request, memory: GuestMemory) throws(BootError) -> BootSetup {
        let path = request.kernelPath
        let load = bzImageLoadAddress
        let kernelSize = bytes.count - image.kernelOffset
        // The kernel decompresses itself within init_size bytes of where it is loaded.
        let footprint = max(UInt64(kernelSize), UInt64(image.initSize))
        try place(bytes, from: image.kernelOffset, count: kernelSize, zeroTo: UInt64(kernelSize), at: load, path: path, memory: memory)
        guard memory.contains(GuestAddress(load), count: Int(footprint)) else {
            throw .badSegment(path: path, reason: "the kernel needs \(footprint >> 20) MiB from \(hex(load)) (init_size) but guest RAM is \(memory.totalSize >> 20) MiB")
        }
        let kernelEnd = load + footprint
        let ceiling = min(UInt64(image.initrdAddressMax) + 1, Layout.lowRamEnd)
        let initramfs = try loadInitramfs(request.initramfsPath, above: kernelEnd, below: ceiling, memory: memory)
        let capacity = min(Int(image.cmdlineSize) + 1, Layout.cmdlineCapacity)
        let commandLine = request.linuxCommandLine
        let cmdline = try writeCommandLine(commandLine, capacity: capacity, memory: memory)
        let acpi = try writeAcpi(request.acpi, memory: memory)
        var params = BootParams()
        params.copySetupHeader(image.setupHeader)
        try writeZeroPage(&params, cmdline: cmdline, cmdlineLength: commandLine.utf8.count + 1,
                          initramfs: initramfs, acpi: acpi, memory: memory)
        return BootSetup(bootState: LongMode.bootState(entry: load + 0x200), kernelEnd: kernelEnd, bootProtocol: .bzImage,
                         initramfs: initramfs)
    }

    // MARK: - Pieces

    /// Copies `count` bytes of `bytes` from `offset` to guest `address`, zero-filling up to `zeroTo` bytes.
    static func place(_ bytes: [UInt8], from offset: Int, count: Int, zeroTo total: UInt64, at address: UInt64,
                      path: String, memory: GuestMemory) throws(BootError) {
        guard memory.contains(GuestAddress(address), count: Int(clamping: total)) else {
            throw .badSegment(path: path, reason: "\(total) bytes at \(hex(address)) do not fit in guest RAM (\(memory.totalSize >> 20) MiB)")
        }
        do {
            let result = bytes.withUnsafeBytes { raw -> Result<Void, GuestMemoryError> in
                let slice = UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + count)])
                return Result { () throws(GuestMemoryError) in try memory.write(bytes: slice, at: GuestAddress(address)) }
            }
            try result.get()
            if total > UInt64(count) {
                try memory.zero(at: GuestAddress(address + UInt64(count)), count: Int(total - UInt64(count)))
            }
        } catch {
            throw .memory(error)
        }
    }

    /// Loads the initramfs at the highest 4 KiB-aligned address that keeps it above `floor` and below
    /// `ceiling` (and inside RAM), as boot loaders do.
    static func loadInitramfs(_ path: String?, above floor: UInt64, below ceiling: UInt64,
                              memory: GuestMemory) throws(BootError) -> BootSetup.Initramfs? {
        guard let path else { return nil }
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(path, limit: memory.totalSize)
        } catch {
            if case .unreadable(_, let reason) = error { throw .initramfs(path: path, reason: "cannot read: \(reason)") }
            throw error
        }
        let size = UInt64(bytes.count)
        let top = min(ceiling, memory.regions.first.map { $0.end } ?? 0)
        guard size > 0 else { throw .initramfs(path: path, reason: "the file is empty") }
        guard top > size, (top - size) & ~0xFFF >= floor else {
            throw .initramfs(path: path, reason: "\(size >> 10) KiB does not fit between the kernel's end \(hex(floor)) and \(hex(top))")
        }
        let address = (top - size) & ~0xFFF
        try place(bytes, from: 0, count: bytes.count, zeroTo: size, at: address, path: path, memory: memory)
        return BootSetup.Initramfs(address: address, size: size)
    }

    /// Writes the NUL-terminated command line at `Layout.cmdline`.
    static func writeCommandLine(_ cmdline: String, capacity: Int, memory: GuestMemory) throws(BootError) -> GuestAddress {
        var line = Array(cmdline.utf8)
        guard line.count < capacity else { throw .cmdlineTooLong(length: line.count, capacity: capacity) }
        line.append(0)
        try write([(Layout.cmdline, line)], memory: memory)
        return Layout.cmdline
    }

    /// What writing the ACPI tables left for the boot protocol: the RSDP's address (0: no tables) and the
    /// ranges the memory map must mark reserved (the tables, MMCONFIG).
    struct AcpiPlacement {
        var rsdp: UInt64 = 0
        var reserved: [E820Entry] = []
    }

    static func writeAcpi(_ config: AcpiConfig?, memory: GuestMemory) throws(BootError) -> AcpiPlacement {
        guard let config else { return AcpiPlacement() }
        let tables = try AcpiTables.build(config)
        try tables.write(to: memory)
        return AcpiPlacement(rsdp: tables.rsdp.address.rawValue, reserved: tables.e820Reservations)
    }

    /// Zero page (with E820, command line, initramfs, RSDP), GDT and page tables for a 64-bit entry.
    static func writeZeroPage(_ params: inout BootParams, cmdline: GuestAddress, cmdlineLength: Int,
                              initramfs: BootSetup.Initramfs?, acpi: AcpiPlacement, memory: GuestMemory) throws(BootError) {
        params.setCommandLine(at: cmdline, size: cmdlineLength)
        if let initramfs { params.setInitramfs(address: initramfs.address, size: initramfs.size) }
        if acpi.rsdp != 0 { params.setAcpiRsdp(at: GuestAddress(acpi.rsdp)) }
        try params.setE820(BootParams.e820Map(for: memory, reserving: acpi.reserved))
        try write([(Layout.zeroPage, params.bytes)], memory: memory)
        do {
            try LongMode.writeStructures(to: memory)
        } catch {
            throw .memory(error)
        }
    }

    /// Command line, zero page, GDT and page tables of a plain 64-bit entry (and ACPI tables when asked).
    static func writeBootStructures(cmdline: String, memory: GuestMemory, acpi: AcpiConfig? = nil) throws(BootError) {
        let address = try writeCommandLine(cmdline, capacity: Layout.cmdlineCapacity, memory: memory)
        let placement = try writeAcpi(acpi, memory: memory)
        var params = BootParams()
        try writeZeroPage(&params, cmdline: address, cmdlineLength: cmdline.utf8.count + 1, initramfs: nil,
                          acpi: placement, memory: memory)
    }

    static func write(_ pieces: [(GuestAddress, [UInt8])], memory: GuestMemory) throws(BootError) {
        do {
            for (address, bytes) in pieces { try memory.write(bytes: bytes, at: address) }
        } catch {
            throw .memory(error)
        }
    }

    static func gdtBytes(_ entries: [UInt64]) -> [UInt8] {
        entries.flatMap { entry in (0..<8).map { UInt8(truncatingIfNeeded: entry >> (8 * $0)) } }
    }
}
