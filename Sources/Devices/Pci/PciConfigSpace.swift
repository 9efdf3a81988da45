/// A type-0 PCI configuration header plus capabilities: 256 bytes of registers and a per-byte write mask.
///
/// Writes only change the bits the mask allows, which is all BAR sizing needs: a BAR's address bits below
/// its size are read-only zeros, so after the driver writes all-ones it reads back `~(size - 1)` plus the
/// type bits. Offsets 0x100–0xFFF (PCIe extended space, reachable through MMCONFIG) read as zero.
public struct PciConfigSpace: Sendable, Equatable {
    public static let size = 256
    public static let capabilitiesStart = 0x40

    public private(set) var bytes = [UInt8](repeating: 0, count: size)
    private var writeMask = [UInt8](repeating: 0, count: size)
    private var lastCapability: Int?
    private var nextCapabilityOffset = capabilitiesStart
    public private(set) var barSizes = [UInt64](repeating: 0, count: 6)

    public struct Identity: Sendable {
        public var vendor: UInt16, device: UInt16, revision: UInt8
        public var classCode: UInt8, subclass: UInt8, progIf: UInt8
        public var subsystemVendor: UInt16, subsystemID: UInt16
        public init(vendor: UInt16, device: UInt16, revision: UInt8 = 0, classCode: UInt8, subclass: UInt8,
                    progIf: UInt8 = 0, subsystemVendor: UInt16 = 0, subsystemID: UInt16 = 0) {
            self.vendor = vendor; self.device = device; self.revision = revision; self.classCode = classCode
            self.subclass = subclass; self.progIf = progIf; self.subsystemVendor = subsystemVendor
            self.subsystemID = subsystemID
        }
    }

    public init(_ id: Identity) {
        set16(0x00, id.vendor)
        set16(0x02, id.device)
        bytes[0x08] = id.revision
        bytes[0x09] = id.progIf
        bytes[0x0A] = id.subclass
        bytes[0x0B] = id.classCode
        bytes[0x0E] = 0x00  // header type 0, single function
        set16(0x2C, id.subsystemVendor)
        set16(0x2E, id.subsystemID)
        // Command: I/O space, memory space, bus master, INTx disable are writable.
        writeMask[0x04] = 0x07
        writeMask[0x05] = 0x04
        writeMask[0x3C] = 0xFF  // interrupt line (scratch for the OS)
    }

    // MARK: - Registers the device cares about

    public var command: UInt16 { UInt16(bytes[0x04]) | UInt16(bytes[0x05]) << 8 }
    public var memoryDecoding: Bool { command & 0x2 != 0 }
    public var busMaster: Bool { command & 0x4 != 0 }

    /// A 64-bit non-prefetchable memory BAR at `index` (taking `index` and `index + 1`) placed at `address`.
    public mutating func addMemoryBar64(index: Int, size: UInt64, address: UInt64) {
        precondition(index < 5 && size >= 16 && size & (size - 1) == 0 && address % size == 0)
        let offset = 0x10 + index * 4
        let low = UInt32(truncatingIfNeeded: address) | 0x4  // type 10b: 64-bit
        set32(offset, low)
        set32(offset + 4, UInt32(truncatingIfNeeded: address >> 32))
        let mask = ~UInt64(size - 1)
        set32Mask(offset, UInt32(truncatingIfNeeded: mask) & 0xFFFF_FFF0)
        set32Mask(offset + 4, UInt32(truncatingIfNeeded: mask >> 32))
        barSizes[index] = size
    }

    /// The address currently programmed in 64-bit memory BAR `index`.
    public func barAddress(_ index: Int) -> UInt64 {
        let offset = 0x10 + index * 4
        return UInt64(get32(offset) & 0xFFFF_FFF0) | UInt64(get32(offset + 4)) << 32
    }

    /// Appends a capability with `id` and `body` (the bytes after the id/next pair), linking it into the
    /// list; `writable` marks body bytes (by index into `body`) the driver may change. Returns its offset.
    @discardableResult
    public mutating func addCapability(id: UInt8, body: [UInt8], writable: [Int: UInt8] = [:]) -> Int {
        let offset = nextCapabilityOffset
        precondition(offset + 2 + body.count <= Self.size, "capabilities overflow configuration space")
        bytes[offset] = id
        bytes[offset + 1] = 0
        for (i, byte) in body.enumerated() { bytes[offset + 2 + i] = byte }
        for (i, mask) in writable { writeMask[offset + 2 + i] = mask }
        if let last = lastCapability {
            bytes[last + 1] = UInt8(offset)
        } else {
            bytes[0x34] = UInt8(offset)
            bytes[0x06] |= 0x10  // status: capabilities list
        }
        lastCapability = offset
        nextCapabilityOffset = (offset + 2 + body.count + 3) & ~3
        return offset
    }

    // MARK: - Access

    /// Reads `width` bytes at `offset` (little-endian); beyond the header, zero.
    public func read(offset: Int, width: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<width where offset + i < Self.size && offset + i >= 0 {
            value |= UInt64(bytes[offset + i]) << (8 * i)
        }
        return value
    }

    /// Writes `width` bytes at `offset`, changing only writable bits.
    public mutating func write(offset: Int, width: Int, value: UInt64) {
        for i in 0..<width where offset + i < Self.size && offset + i >= 0 {
            let mask = writeMask[offset + i]
            let byte = UInt8(truncatingIfNeeded: value >> (8 * i))
            bytes[offset + i] = (bytes[offset + i] & ~mask) | (byte & mask)
        }
    }

    /// Loads the driver-writable bits of a snapshot's register image (`image` must be ``size`` bytes): the
    /// device's own read-only bytes (identity, capabilities, BAR sizes) stay as this build made them.
    public mutating func restoreWritable(_ image: [UInt8]) {
        precondition(image.count == Self.size)
        for i in 0..<Self.size { bytes[i] = (bytes[i] & ~writeMask[i]) | (image[i] & writeMask[i]) }
    }

    /// Sets bytes regardless of the mask (for device-owned state such as read-only capability fields).
    public mutating func setByte(_ offset: Int, _ value: UInt8) { bytes[offset] = value }

    mutating func set16(_ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(value & 0xFF); bytes[offset + 1] = UInt8(value >> 8)
    }

    mutating func set32(_ offset: Int, _ value: UInt32) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    mutating func set32Mask(_ offset: Int, _ mask: UInt32) {
        for i in 0..<4 { writeMask[offset + i] = UInt8(truncatingIfNeeded: mask >> (8 * i)) }
    }

    func get32(_ offset: Int) -> UInt32 { UInt32(truncatingIfNeeded: read(offset: offset, width: 4)) }
}
