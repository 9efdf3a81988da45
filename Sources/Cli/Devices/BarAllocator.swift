/// Hands out BAR addresses from the 32-bit PCI window: first fit, each BAR naturally aligned (its base a
/// multiple of its size, as PCI requires), freed ranges reused.
struct BarAllocator: Sendable {
    let window: Range<UInt64>
    /// Allocated ranges, sorted by base.
    private(set) var allocated: [Range<UInt64>] = []

    init(window: Range<UInt64>) { self.window = window }

    /// A free, aligned range of `size` bytes (a power of two), or nil when the window is full.
    mutating func allocate(size: UInt64) -> Range<UInt64>? {
        precondition(size > 0 && size & (size - 1) == 0, "BAR sizes are powers of two")
        var candidate = align(window.lowerBound, size)
        for range in allocated {
            if candidate + size <= range.lowerBound { break }
            candidate = max(candidate, align(range.upperBound, size))
        }
        guard candidate >= window.lowerBound, candidate + size <= window.upperBound else { return nil }
        let range = candidate..<(candidate + size)
        allocated.append(range)
        allocated.sort { $0.lowerBound < $1.lowerBound }
        return range
    }

    mutating func free(_ range: Range<UInt64>) {
        allocated.removeAll { $0 == range }
    }

    private func align(_ value: UInt64, _ alignment: UInt64) -> UInt64 { (value + alignment - 1) & ~(alignment - 1) }
}
