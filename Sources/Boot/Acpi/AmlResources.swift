/// Resource data descriptors, the contents of a `_CRS` buffer (ACPI 6.5 §6.4, "Resource Data Types for
/// ACPI"). Small items (§6.4.2) start with a tag byte `type << 3 | length`; large items (§6.4.3) with
/// `0x80 | type` and a 16-bit length of the rest. Each function names the ASL it is equivalent to.
public enum AmlResource {
    // MARK: Small resource items (§6.4.2)

    /// `IRQNoFlags () { irqs }` (§6.4.2.1, the 2-byte form): ISA IRQs as a 16-bit mask; edge-triggered,
    /// active-high, exclusive by definition.
    public static func irqNoFlags(_ irqs: [Int]) -> [UInt8] {
        precondition(irqs.allSatisfy { (0..<16).contains($0) }, "an IRQ descriptor holds IRQs 0-15")
        let mask = irqs.reduce(UInt16(0)) { $0 | 1 << UInt16($1) }
        var bytes: [UInt8] = [0x04 << 3 | 2]
        bytes.appendLittleEndian(mask)
        return bytes
    }

    /// `IO (Decode16, min, max, alignment, length)` (§6.4.2.5): a range of I/O ports decoded with all 16
    /// address bits.
    public static func io(min: UInt16, max: UInt16, alignment: UInt8, length: UInt8) -> [UInt8] {
        var bytes: [UInt8] = [0x08 << 3 | 7, 0x01]
        bytes.appendLittleEndian(min)
        bytes.appendLittleEndian(max)
        return bytes + [alignment, length]
    }

    /// The End Tag (§6.4.2.9) closing a template whose other descriptors are `descriptors`. Its second
    /// byte is the checksum that makes the whole template sum to zero.
    public static func endTag(after descriptors: [UInt8]) -> [UInt8] {
        let tag: UInt8 = 0x0F << 3 | 1
        return [tag, acpiChecksum(descriptors + [tag])]
    }

    // MARK: Large resource items (§6.4.3)

    /// `Memory32Fixed (ReadWrite, base, length)` (§6.4.3.4).
    public static func memory32Fixed(base: UInt32, length: UInt32) -> [UInt8] {
        var body: [UInt8] = [0x01]  // bit 0: read-write
        body.appendLittleEndian(base)
        body.appendLittleEndian(length)
        return large(type: 0x06, body)
    }

    /// `Interrupt (ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive) { gsis }` (§6.4.3.6,
    /// Extended Interrupt Descriptor): global system interrupt numbers, with the trigger and polarity explicit.
    public static func interrupt(_ gsis: [UInt32], edgeTriggered: Bool = true, activeLow: Bool = false) -> [UInt8] {
        precondition((1...255).contains(gsis.count), "an interrupt descriptor lists 1 to 255 interrupts")
        // Bit 0 consumer, bit 1 edge, bit 2 active-low, bit 3 shared (not set: exclusive).
        let flags: UInt8 = 0x01 | (edgeTriggered ? 0x02 : 0) | (activeLow ? 0x04 : 0)
        var body: [UInt8] = [flags, UInt8(gsis.count)]
        for gsi in gsis { body.appendLittleEndian(gsi) }
        return large(type: 0x09, body)
    }

    /// `WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, count)`
    /// (§6.4.3.5.3, Word Address Space Descriptor with resource type 2): the buses below a host bridge.
    public static func wordBusNumber(_ buses: ClosedRange<UInt16>) -> [UInt8] {
        addressSpace(type: .busNumber, typeFlags: 0, buses.lowerBound, buses.upperBound)
    }

    /// `WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length)`
    /// (§6.4.3.5.3): an I/O port window a host bridge forwards to its bus.
    public static func wordIO(_ ports: ClosedRange<UInt16>) -> [UInt8] {
        addressSpace(type: .io, typeFlags: 0x03, ports.lowerBound, ports.upperBound)  // _RNG: entire range
    }

    /// `DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0, min, max,
    /// 0, length)` (§6.4.3.5.2): a memory window a host bridge forwards to its bus.
    public static func dwordMemory(_ range: ClosedRange<UInt32>) -> [UInt8] {
        addressSpace(type: .memory, typeFlags: memoryFlags, range.lowerBound, range.upperBound)
    }

    /// `QWordMemory (…)` with the same flags as `dwordMemory` (§6.4.3.5.1): a window above 4 GiB; with
    /// `cacheable`, `Cacheable` instead of `NonCacheable` (RAM, such as a hot-added memory device).
    public static func qwordMemory(_ range: ClosedRange<UInt64>, cacheable: Bool = false) -> [UInt8] {
        addressSpace(type: .memory, typeFlags: memoryFlags | (cacheable ? 0x02 : 0), range.lowerBound, range.upperBound)
    }

    // MARK: Address space descriptors (§6.4.3.5)

    enum ResourceType: UInt8 { case memory = 0, io = 1, busNumber = 2 }
    /// Type-specific flags for memory (Table 6.50): bit 0 read-write, bits 1–2 non-cacheable (0),
    /// bits 3–4 AddressRangeMemory (0), bit 5 TypeStatic (0).
    static let memoryFlags: UInt8 = 0x01
    /// General flags (Table 6.47): bit 0 producer (0), bit 1 positive decode (0), bit 2 minimum address
    /// fixed, bit 3 maximum address fixed.
    static let producerFixedRange: UInt8 = 0x0C

    /// An address space descriptor of the integers' width (Word 0x88, DWord 0x87, QWord 0x8A): resource
    /// type, general flags, type-specific flags, then granularity 0, min, max, translation offset 0 and
    /// length max − min + 1, each as wide as `T`.
    static func addressSpace<T: FixedWidthInteger & UnsignedInteger>(type: ResourceType, typeFlags: UInt8,
                                                                    _ min: T, _ max: T) -> [UInt8] {
        var body: [UInt8] = [type.rawValue, producerFixedRange, typeFlags]
        for field in [T.zero, min, max, T.zero, max &- min &+ 1] { body.appendLittleEndian(field) }
        let itemType: UInt8 = switch T.bitWidth { case 16: 0x08; case 32: 0x07; default: 0x0A }
        return large(type: itemType, body)
    }

    static func large(type: UInt8, _ body: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0x80 | type]
        bytes.appendLittleEndian(UInt16(body.count))
        return bytes + body
    }
}

extension Aml {
    /// `ResourceTemplate () { descriptors }` (ACPI 6.5 §19.3.3): a Buffer holding the descriptors followed by
    /// an End Tag.
    public static func resourceTemplate(_ descriptors: [[UInt8]]) -> [UInt8] {
        let items = descriptors.flatMap { $0 }
        return buffer(items + AmlResource.endTag(after: items))
    }
}
