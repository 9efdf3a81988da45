import ActorVmm

/// One E820 memory-map entry.
public struct E820Entry: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2, acpi = 3 }
    public let address: UInt64
    public let size: UInt64
    public let kind: Kind
    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address; self.size = size; self.kind = kind
    }
}

/// Builds the Linux `boot_params` zero page (Documentation/arch/x86/boot.rst, "The Linux/x86 Boot Protocol")
/// as 4096 bytes. Offsets are those of `struct boot_params` in <asm/bootparam.h>; unit tests compare them
/// with the C header's `offsetof`.
public struct BootParams: Equatable, Sendable {
    public static let size = 4096
    // Field offsets in struct boot_params.
    public static let acpiRsdpAddrOffset = 0x070
    public static let extCmdLinePtrOffset = 0x0C8
    public static let e820EntriesOffset = 0x1E8
    public static let bootFlagOffset = 0x1FE
    public static let headerOffset = 0x202
    public static let typeOfLoaderOffset = 0x210
    public static let loadFlagsOffset = 0x211
    public static let cmdLinePtrOffset = 0x228
    public static let kernelAlignmentOffset = 0x230
    public static let cmdlineSizeOffset = 0x238
    public static let e820TableOffset = 0x2D0
    public static let e820MaxEntries = 128
    public static let extRamdiskImageOffset = 0x0C0, extRamdiskSizeOffset = 0x0C4
    public static let setupHeaderOffset = 0x1F1
    public static let ramdiskImageOffset = 0x218, ramdiskSizeOffset = 0x21C

    public private(set) var bytes = [UInt8](repeating: 0, count: size)

    public init() {
        set(UInt16(0xAA55), at: Self.bootFlagOffset)
        set(UInt32(0x5372_6448), at: Self.headerOffset)  // "HdrS"
        bytes[Self.typeOfLoaderOffset] = 0xFF            // "other" boot loader
        set(UInt32(0x0100_0000), at: Self.kernelAlignmentOffset)
    }

    /// Points the kernel at its command line (`cmd_line_ptr`, `ext_cmd_line_ptr`, `cmdline_size`).
    public mutating func setCommandLine(at address: GuestAddress, size: Int) {
        set(UInt32(truncatingIfNeeded: address.rawValue), at: Self.cmdLinePtrOffset)
        set(UInt32(truncatingIfNeeded: address.rawValue >> 32), at: Self.extCmdLinePtrOffset)
        // A bzImage's header already holds its limit here (a kernel → loader field): keep it.
        if bytes[Self.cmdlineSizeOffset..<(Self.cmdlineSizeOffset + 4)].allSatisfy({ $0 == 0 }) {
            set(UInt32(size), at: Self.cmdlineSizeOffset)
        }
    }

    /// Copies a bzImage's setup header into `hdr`, then re-applies the fields a boot loader must set.
    public mutating func copySetupHeader(_ header: [UInt8]) {
        for (index, byte) in header.prefix(Self.size - Self.setupHeaderOffset).enumerated() {
            bytes[Self.setupHeaderOffset + index] = byte
        }
        bytes[Self.typeOfLoaderOffset] = 0xFF
    }

    /// Tells the kernel where the initramfs is (`ramdisk_image`/`ramdisk_size` and their high halves).
    public mutating func setInitramfs(address: UInt64, size: UInt64) {
        set(UInt32(truncatingIfNeeded: address), at: Self.ramdiskImageOffset)
        set(UInt32(truncatingIfNeeded: size), at: Self.ramdiskSizeOffset)
        set(UInt32(truncatingIfNeeded: address >> 32), at: Self.extRamdiskImageOffset)
        set(UInt32(truncatingIfNeeded: size >> 32), at: Self.extRamdiskSizeOffset)
    }

    /// Tells the kernel where the ACPI RSDP is (`acpi_rsdp_addr`, boot protocol 2.14+), so it need not scan.
    public mutating func setAcpiRsdp(at address: GuestAddress) {
        set(address.rawValue, at: Self.acpiRsdpAddrOffset)
    }

    /// Writes the E820 map. Fails if it has more entries than the zero page holds.
    public mutating func setE820(_ entries: [E820Entry]) throws(BootError) {
        guard entries.count <= Self.e820MaxEntries else {
            throw .memory(.invalidLayout("\(entries.count) E820 entries, at most \(Self.e820MaxEntries)"))
        }
        bytes[Self.e820EntriesOffset] = UInt8(entries.count)
        for (index, entry) in entries.enumerated() {
            let base = Self.e820TableOffset + index * 20
            set(entry.address, at: base)
            set(entry.size, at: base + 8)
            set(entry.kind.rawValue, at: base + 16)
        }
    }

    mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { raw in
            for (i, byte) in raw.enumerated() { bytes[offset + i] = byte }
        }
    }

    /// The E820 map for guest RAM regions: low RAM split around the EBDA/BIOS area, then everything else;
    /// plus `reserved` ranges (which must not overlap RAM), all in address order.
    public static func e820Map(for memory: GuestMemory, reserving reserved: [E820Entry] = []) -> [E820Entry] {
        var map: [E820Entry] = []
        for region in memory.regions {
            let start = region.start.rawValue, end = region.end
            if start < Layout.highMemoryStart {
                map.append(E820Entry(address: start, size: min(end, Layout.ebdaStart) - start, kind: .ram))
                if end > Layout.highMemoryStart {
                    map.append(E820Entry(address: Layout.highMemoryStart, size: end - Layout.highMemoryStart, kind: .ram))
                }
            } else {
                map.append(E820Entry(address: start, size: region.size, kind: .ram))
            }
        }
        return (map + reserved).sorted { $0.address < $1.address }
    }
}
