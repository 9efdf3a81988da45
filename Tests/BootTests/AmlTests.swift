@testable import Boot
import Testing

/// The AML encoder, byte by byte. Expected bytes are those `iasl` (ACPICA 20200925) emits for the same ASL.
@Suite struct AmlTests {
    static let integers: [(UInt64, [UInt8])] = [
        (0, [0x00]),                                           // ZeroOp
        (1, [0x01]),                                           // OneOp
        (2, [0x0A, 0x02]),                                     // ByteConst
        (0xFF, [0x0A, 0xFF]),
        (0x100, [0x0B, 0x00, 0x01]),                           // WordConst
        (0xFFFF, [0x0B, 0xFF, 0xFF]),
        (0x1_0000, [0x0C, 0x00, 0x00, 0x01, 0x00]),            // DWordConst
        (0xE7FF_FFFF, [0x0C, 0xFF, 0xFF, 0xFF, 0xE7]),
        (0x1_0000_0000, [0x0E, 0, 0, 0, 0, 1, 0, 0, 0]),       // QWordConst
        (0xFFFF_FFFF_FFFF_FFFE, [0x0E, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        (UInt64.max, [0xFF]),                                  // OnesOp
    ]

    @Test(arguments: integers)
    func integersUseTheShortestEncoding(value: UInt64, bytes: [UInt8]) {
        #expect(Aml.integer(value) == bytes)
    }

    static let pkgLengths: [(Int, [UInt8])] = [
        (0, [0x00]),
        (63, [0x3F]),                       // the largest one-byte PkgLength
        (64, [0x40, 0x04]),                 // two bytes: low nibble 0, then 0x04 (64 >> 4)
        (4095, [0x4F, 0xFF]),               // the largest two-byte PkgLength
        (4096, [0x80, 0x00, 0x01]),
        (1_048_575, [0x8F, 0xFF, 0xFF]),    // the largest three-byte PkgLength
        (1_048_576, [0xC0, 0x00, 0x00, 0x01]),
        (0x0FFF_FFFF, [0xCF, 0xFF, 0xFF, 0xFF]),
    ]

    @Test(arguments: pkgLengths)
    func pkgLengthEncodings(total: Int, bytes: [UInt8]) {
        #expect(Aml.encodePkgLength(total) == bytes)
    }

    /// The PkgLength counts its own bytes, so content sizes just below a boundary need the larger encoding.
    @Test(arguments: [(62, 1), (63, 2), (4093, 2), (4094, 3), (1_048_572, 3), (1_048_573, 4)] as [(Int, Int)])
    func pkgLengthCountsItself(contentSize: Int, lengthBytes: Int) {
        let encoded = Aml.withPkgLength([UInt8](repeating: 0xAA, count: contentSize))
        #expect(encoded.count == contentSize + lengthBytes)
        let lead = Int(encoded[0])
        let follow = lengthBytes == 1 ? 0 : lead >> 6
        #expect(follow == lengthBytes - 1)
        var value = lengthBytes == 1 ? lead & 0x3F : lead & 0x0F
        for i in 0..<follow { value |= Int(encoded[1 + i]) << (4 + 8 * i) }
        #expect(value == encoded.count)
    }

    static let names: [(String, [UInt8])] = [
        ("_HID", Array("_HID".utf8)),
        ("_SB", Array("_SB_".utf8)),                                          // padded to 4 characters
        ("A", Array("A___".utf8)),
        ("\\", [0x5C, 0x00]),                                                 // the root: RootChar NullName
        ("\\_SB_", [0x5C] + Array("_SB_".utf8)),
        ("^PCI0", [0x5E] + Array("PCI0".utf8)),                               // parent prefix
        ("^^X", [0x5E, 0x5E] + Array("X___".utf8)),
        ("\\_SB.PCI0", [0x5C, 0x2E] + Array("_SB_PCI0".utf8)),                // DualNamePrefix
        ("_SB.PCI0.COM1", [0x2F, 0x03] + Array("_SB_PCI0COM1".utf8)),         // MultiNamePrefix, count 3
        ("\\_SB.PCI0.S1.X", [0x5C, 0x2F, 0x04] + Array("_SB_PCI0S1__X___".utf8)),
    ]

    @Test(arguments: names)
    func nameStrings(path: String, bytes: [UInt8]) {
        #expect(Aml.nameString(path) == bytes)
    }

    static let eisaIds: [(String, UInt32)] = [
        ("PNP0A08", 0x080A_D041),          // PCI Express root bridge
        ("PNP0A03", 0x030A_D041),          // PCI root bridge
        ("PNP0501", 0x0105_D041),          // 16550A serial port
        ("PNP0C02", 0x020C_D041),          // motherboard resources
        ("PNP0C0C", 0x0C0C_D041),          // power button
    ]

    @Test(arguments: eisaIds)
    func eisaIdCompression(id: String, value: UInt32) {
        #expect(Aml.eisaIdValue(id) == value)
        // Always a DWordConst, whose bytes are the big-endian compressed ID.
        #expect(Aml.eisaId(id) == [0x0C] + withUnsafeBytes(of: value.littleEndian) { Array($0) })
    }

    @Test func namedObjectsAndStatements() {
        // Name (_UID, Zero)
        #expect(Aml.name("_UID", Aml.integer(0)) == [0x08] + Array("_UID".utf8) + [0x00])
        // Method (_STA, 0, NotSerialized) { Return (0x0F) }
        #expect(Aml.method("_STA", [Aml.returnValue(Aml.integer(0x0F))])
                == [0x14, 0x09] + Array("_STA".utf8) + [0x00, 0xA4, 0x0A, 0x0F])
        // Method (FOO, 2, Serialized) {}
        #expect(Aml.method("FOO", arguments: 2, serialized: true, []) == [0x14, 0x06] + Array("FOO_".utf8) + [0x0A])
        // Device (PWRB) { Name (_UID, Zero) }
        #expect(Aml.device("PWRB", [Aml.name("_UID", Aml.integer(0))])
                == [0x5B, 0x82, 0x0B] + Array("PWRB".utf8) + [0x08] + Array("_UID".utf8) + [0x00])
        // Scope (\_SB) {}
        #expect(Aml.scope("\\_SB_", []) == [0x10, 0x06, 0x5C] + Array("_SB_".utf8))
        // Package () { 5 }, as in Name (_S5, Package () { 5 })
        #expect(Aml.package([Aml.integer(5)]) == [0x12, 0x04, 0x01, 0x0A, 0x05])
        // Buffer () { 1, 2, 3 }
        #expect(Aml.buffer([1, 2, 3]) == [0x11, 0x06, 0x0A, 0x03, 1, 2, 3])
        // "COM1"
        #expect(Aml.string("COM1") == [0x0D] + Array("COM1".utf8) + [0x00])
    }

    @Test func largeTermsGetLongerPkgLengths() {
        let device = Aml.device("BIG", [Aml.buffer([UInt8](repeating: 0, count: 100))])
        // 4 (name) + 1 (BufferOp) + 2 (PkgLength 104) + 2 (ByteConst 100) + 100 = 109, + 2 for itself = 111.
        #expect(Array(device[0..<4]) == [0x5B, 0x82, 0x4F, 0x06])
        #expect(device.count == 2 + 111)
    }
}

@Suite struct AmlResourceTests {
    @Test func descriptorsMatchIasl() {
        #expect(AmlResource.wordBusNumber(0...0) == [0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00])
        #expect(AmlResource.io(min: 0xCF8, max: 0xCF8, alignment: 1, length: 8) == [0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08])
        #expect(AmlResource.wordIO(0...0xCF7) == [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0, 0, 0xF7, 0x0C, 0, 0, 0xF8, 0x0C])
        #expect(AmlResource.wordIO(0xD00...0xFFFF) == [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0x00, 0x0D, 0xFF, 0xFF, 0, 0, 0x00, 0xF3])
        #expect(AmlResource.dwordMemory(0xC000_0000...0xE7FF_FFFF) == [
            0x87, 0x17, 0x00, 0x00, 0x0C, 0x01,
            0, 0, 0, 0, 0x00, 0x00, 0x00, 0xC0, 0xFF, 0xFF, 0xFF, 0xE7, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x28,
        ])
        #expect(AmlResource.memory32Fixed(base: 0xE800_0000, length: 0x10_0000)
                == [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xE8, 0x00, 0x00, 0x10, 0x00])
        #expect(AmlResource.interrupt([4]) == [0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00])
        #expect(AmlResource.interrupt([9], edgeTriggered: false, activeLow: true) == [0x89, 0x06, 0x00, 0x05, 0x01, 0x09, 0, 0, 0])
        #expect(AmlResource.irqNoFlags([4]) == [0x22, 0x10, 0x00])
        let qword = AmlResource.qwordMemory(0x1_0000_0000...0x1_FFFF_FFFF)
        #expect(qword.count == 46 && Array(qword[0..<6]) == [0x8A, 0x2B, 0x00, 0x00, 0x0C, 0x01])
        #expect(Array(qword[38..<46]) == [0, 0, 0, 0, 1, 0, 0, 0])  // length 4 GiB
    }

    @Test func resourceTemplateEndsWithAChecksummedEndTag() {
        let descriptors = [AmlResource.io(min: 0x3F8, max: 0x3F8, alignment: 1, length: 8), AmlResource.interrupt([4])]
        let template = Aml.resourceTemplate(descriptors)
        // Buffer (0x13) { …17 bytes of descriptors…, 0x79, checksum }
        #expect(Array(template[0..<4]) == [0x11, 0x16, 0x0A, 0x13])
        let items = Array(template[4...])
        #expect(items.count == 0x13)
        #expect(items[items.count - 2] == 0x79)
        #expect(items.reduce(UInt8(0), &+) == 0)
    }
}
