/// A register block built on the stack for one read: the device writes its fields in order, little-endian,
/// and the read takes `width` bytes at `offset` — what `readCommon` and the backends' `readConfig` do on
/// every register read, without building an array each time (bytes past what was written read as 0).
struct ConfigImage {
    static let capacity = 64
    private let bytes: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    private init(_ bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// Builds an image of at most ``capacity`` bytes with `build` and reads `width` bytes at `offset`.
    static func read(offset: Int, width: Int, _ build: (inout ConfigImage) -> Void) -> UInt64 {
        withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) { raw in
            var image = ConfigImage(raw)
            build(&image)
            var value: UInt64 = 0
            for i in 0..<width where offset + i >= 0 && offset + i < image.count {
                value |= UInt64(raw[offset + i]) << (8 * i)
            }
            return value
        }
    }

    /// Appends `value` as its width in little-endian bytes (dropped past the capacity).
    mutating func append<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        guard count + size <= bytes.count else { return }
        bytes.storeBytes(of: value.littleEndian, toByteOffset: count, as: T.self)
        count += size
    }

    /// Appends `n` zero bytes.
    mutating func zeros(_ n: Int) {
        for _ in 0..<n { append(UInt8(0)) }
    }
}
