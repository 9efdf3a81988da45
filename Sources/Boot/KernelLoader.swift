import ActorVmm

/// What the loader produced: where the boot vCPU starts.
public struct BootSetup: Sendable, Equatable {
    public let bootState: VcpuBootState
    public let kernelEnd: UInt64
}

/// Loads an ELF64 kernel into guest memory and writes the zero page, command line, GDT and page tables,
/// returning the boot vCPU's register state. Boot code sees only `GuestMemory`, never KVM.
public enum KernelLoader {
    /// Loads `path` (ELF64 x86-64) and prepares a direct 64-bit entry with `cmdline`. With `acpi`, also
    /// writes the ACPI tables it describes (see `writeBootStructures`).
    public static func loadElfKernel(path: String, cmdline: String, memory: GuestMemory,
                                     acpi: AcpiConfig? = nil) throws(BootError) -> BootSetup {
        let bytes = try readWholeFile(path)
        let image: Elf64Image
        do {
            image = try Elf64Image(bytes: bytes)
        } catch {
            if bytes.count > 0x206, bytes[0x202] == 0x48, bytes[0x203] == 0x64, bytes[0x204] == 0x72, bytes[0x205] == 0x53 {
                throw .notElf64(path: path, reason: "this is a bzImage; bzImage kernels are not supported yet, pass an ELF vmlinux")
            }
            throw .notElf64(path: path, reason: error.reason)
        }
        return try load(image: image, bytes: bytes, path: path, cmdline: cmdline, memory: memory, acpi: acpi)
    }

    /// Places a parsed image; split out so tests can feed crafted images.
    public static func load(image: Elf64Image, bytes: [UInt8], path: String, cmdline: String,
                            memory: GuestMemory, acpi: AcpiConfig? = nil) throws(BootError) -> BootSetup {
        var kernelEnd: UInt64 = 0
        for segment in image.segments {
            let start = segment.physicalAddress
            guard start >= Layout.highMemoryStart else {
                throw .badSegment(path: path, reason: "segment at \(hex(start)) is below 1 MiB, where boot structures live")
            }
            guard memory.contains(GuestAddress(start), count: Int(clamping: segment.memorySize)) else {
                throw .badSegment(path: path, reason: "segment at \(hex(start)) of \(segment.memorySize) bytes does not fit in guest RAM (\(memory.totalSize >> 20) MiB)")
            }
            do {
                let result = bytes.withUnsafeBytes { raw -> Result<Void, GuestMemoryError> in
                    let slice = UnsafeRawBufferPointer(rebasing: raw[segment.fileOffset..<(segment.fileOffset + segment.fileSize)])
                    return Result { () throws(GuestMemoryError) in try memory.write(bytes: slice, at: GuestAddress(start)) }
                }
                try result.get()
                let bss = segment.memorySize - UInt64(segment.fileSize)
                if bss > 0 { try memory.zero(at: GuestAddress(start + UInt64(segment.fileSize)), count: Int(bss)) }
            } catch {
                throw .memory(error)
            }
            kernelEnd = max(kernelEnd, start + segment.memorySize)
        }
        guard image.segments.contains(where: { $0.physicalAddress <= image.entry && image.entry < $0.physicalAddress + $0.memorySize }) else {
            throw .badSegment(path: path, reason: "entry point \(hex(image.entry)) is outside every loaded segment")
        }
        try writeBootStructures(cmdline: cmdline, memory: memory, acpi: acpi)
        return BootSetup(bootState: LongMode.bootState(entry: image.entry), kernelEnd: kernelEnd)
    }

    /// Command line, zero page (with E820), GDT and page tables. With `acpi`: the ACPI tables, their RSDP
    /// address in the zero page (`acpi_rsdp_addr`), and E820 reservations for the tables and MMCONFIG.
    static func writeBootStructures(cmdline: String, memory: GuestMemory, acpi: AcpiConfig? = nil) throws(BootError) {
        var line = Array(cmdline.utf8)
        guard line.count < Layout.cmdlineCapacity else {
            throw .cmdlineTooLong(length: line.count, capacity: Layout.cmdlineCapacity)
        }
        line.append(0)
        var params = BootParams()
        params.setCommandLine(at: Layout.cmdline, size: line.count)
        var reserved: [E820Entry] = []
        if let acpi {
            let tables = try AcpiTables.build(acpi)
            try tables.write(to: memory)
            params.setAcpiRsdp(at: tables.rsdp.address)
            reserved = tables.e820Reservations
        }
        try params.setE820(BootParams.e820Map(for: memory, reserving: reserved))
        do {
            try memory.write(bytes: line, at: Layout.cmdline)
            try memory.write(bytes: params.bytes, at: Layout.zeroPage)
            try LongMode.writeStructures(to: memory)
        } catch {
            throw .memory(error)
        }
    }
}
