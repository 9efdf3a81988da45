/// A bzImage's setup header (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header"), parsed
/// and checked for what the 64-bit boot protocol needs. Pure: bytes in, value out.
public struct BzImage: Equatable, Sendable {
    /// Offsets in the file (= offsets in `struct boot_params`, whose `hdr` starts at 0x1F1).
    static let setupSectsOffset = 0x1F1, bootFlagOffset = 0x1FE, headerOffset = 0x202, versionOffset = 0x206
    static let loadFlagsOffset = 0x211, initrdAddrMaxOffset = 0x22C, kernelAlignmentOffset = 0x230
    static let relocatableOffset = 0x234, xloadflagsOffset = 0x236, cmdlineSizeOffset = 0x238
    static let prefAddressOffset = 0x258, initSizeOffset = 0x260
    static let xlfKernel64: UInt16 = 1

    public let protocolVersion: UInt16
    public let loadFlags: UInt8
    public let initrdAddressMax: UInt32
    public let cmdlineSize: UInt32
    public let initSize: UInt32
    /// File offset of the protected-mode kernel ((setup_sects + 1) × 512).
    public let kernelOffset: Int
    /// The setup header as in the file: bytes 0x1F1 up to the end the header says it has.
    public let setupHeader: [UInt8]

    /// True when the file looks like a bzImage at all (boot flag and "HdrS").
    public static func matches(_ bytes: [UInt8]) -> Bool {
        bytes.count > 0x206 && bytes[0x1FE] == 0x55 && bytes[0x1FF] == 0xAA
            && Array(bytes[0x202..<0x206]) == Array("HdrS".utf8)
    }

    public init(bytes: [UInt8]) throws(ElfError) {
        func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * $1) } }
        guard bytes.count > 0x264, Self.matches(bytes) else { throw ElfError("no bzImage setup header (boot flag 0xAA55 and \"HdrS\")") }
        protocolVersion = u16(Self.versionOffset)
        guard protocolVersion >= 0x020C else {
            throw ElfError("boot protocol \(protocolVersion >> 8).\(protocolVersion & 0xFF) is too old (2.12 or newer has the 64-bit entry)")
        }
        guard u16(Self.xloadflagsOffset) & Self.xlfKernel64 != 0 else {
            throw ElfError("the kernel has no 64-bit entry point (XLF_KERNEL_64 is clear)")
        }
        loadFlags = bytes[Self.loadFlagsOffset]
        guard loadFlags & 1 != 0 else { throw ElfError("not a bzImage (LOADED_HIGH is clear: a zImage)") }
        initrdAddressMax = u32(Self.initrdAddrMaxOffset)
        cmdlineSize = u32(Self.cmdlineSizeOffset)
        initSize = u32(Self.initSizeOffset)
        let setupSects = Int(bytes[Self.setupSectsOffset] == 0 ? 4 : bytes[Self.setupSectsOffset])
        kernelOffset = (setupSects + 1) * 512
        guard kernelOffset < bytes.count else { throw ElfError("setup_sects \(setupSects) points past the end of the file") }
        let headerEnd = 0x202 + Int(bytes[0x201])  // the jump at 0x200 skips the header
        guard headerEnd > Self.initSizeOffset + 4, headerEnd <= min(bytes.count, 0x1F1 + 0x7F + 0x100) else {
            throw ElfError("setup header length \(headerEnd - 0x1F1) is out of range")
        }
        setupHeader = Array(bytes[0x1F1..<headerEnd])
    }
}
