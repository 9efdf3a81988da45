/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`): the checksum of snapshot sections and migration frames.
///
/// Slicing-by-8 (eight 256-entry tables, eight bytes per step): a migration checksums every page it sends
/// and receives, and the byte-at-a-time loop this replaced was most of a migration's CPU time in the nested
/// tier's emulated L1 (docs/benchmarks.md, row 6). `bytewise` is that loop, kept as the reference the
/// tests compare against.
public enum Crc32 {
    /// `tables[k][n]`: the CRC of byte `n` followed by `k` zero bytes; `tables[0]` is the classic table.
    static let tables: [[UInt32]] = {
        var first = [UInt32](repeating: 0, count: 256)
        for n in 0..<256 {
            var c = UInt32(n)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            first[n] = c
        }
        var tables = [first]
        for k in 1..<8 {
            tables.append((0..<256).map { n in
                let previous = tables[k - 1][n]
                return first[Int(previous & 0xFF)] ^ (previous >> 8)
            })
        }
        return tables
    }()

    /// The checksum of `bytes`, continuing from `crc` (0 to start).
    public static func checksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: crc) }
    }

    /// The checksum of `bytes` (a slice), continuing from `crc`.
    public static func checksum(_ bytes: ArraySlice<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: crc) }
    }

    /// The checksum of the bytes in `buffer`, continuing from `crc`.
    public static func checksum(_ buffer: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        let count = buffer.count
        guard count > 0, let base = buffer.baseAddress else { return crc }
        tables[0].withUnsafeBufferPointer { t0 in
        tables[1].withUnsafeBufferPointer { t1 in
        tables[2].withUnsafeBufferPointer { t2 in
        tables[3].withUnsafeBufferPointer { t3 in
        tables[4].withUnsafeBufferPointer { t4 in
        tables[5].withUnsafeBufferPointer { t5 in
        tables[6].withUnsafeBufferPointer { t6 in
        tables[7].withUnsafeBufferPointer { t7 in
            var offset = 0
            while count - offset >= 8 {
                // SAFETY: offset + 8 <= count, inside `buffer`; loadUnaligned has no alignment requirement.
                let low = c ^ UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let high = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
                c = t7[Int(low & 0xFF)] ^ t6[Int((low >> 8) & 0xFF)] ^ t5[Int((low >> 16) & 0xFF)] ^ t4[Int(low >> 24)]
                    ^ t3[Int(high & 0xFF)] ^ t2[Int((high >> 8) & 0xFF)] ^ t1[Int((high >> 16) & 0xFF)] ^ t0[Int(high >> 24)]
                offset += 8
            }
            while offset < count {
                // SAFETY: offset < count, inside `buffer`.
                c = t0[Int((c ^ UInt32(base.load(fromByteOffset: offset, as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                offset += 1
            }
        }}}}}}}}
        return ~c
    }

    /// The byte-at-a-time reference: the same checksum, one table look-up per byte.
    static func bytewise(_ bytes: some Sequence<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        for byte in bytes { c = tables[0][Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }
}
