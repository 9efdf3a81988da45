/// Which memory blocks of a virtio-mem region are plugged: one bit per block, 64 to a word.
public struct VirtioMemBlocks: Equatable, Sendable {
    /// How many blocks the region has.
    public let count: Int
    private(set) var words: [UInt64]

    /// `count` blocks, all unplugged.
    public init(count: Int) {
        precondition(count >= 0)
        self.count = count
        words = Array(repeating: 0, count: (count + 63) / 64)
    }

    /// A bitmap from its words (a snapshot); nil if bits past `count` are set or the word count is wrong.
    init?(count: Int, words: [UInt64]) {
        guard count >= 0, words.count == (count + 63) / 64 else { return nil }
        if count % 64 != 0, let last = words.last, last >> UInt64(count % 64) != 0 { return nil }
        self.count = count
        self.words = words
    }

    public func isPlugged(_ block: Int) -> Bool {
        words[block / 64] & (1 << UInt64(block % 64)) != 0
    }

    /// True if every block of `range` (inside `0..<count`) is `plugged`.
    public func all(_ range: Range<Int>, plugged: Bool) -> Bool {
        range.allSatisfy { isPlugged($0) == plugged }
    }

    /// Marks every block of `range` (inside `0..<count`) `plugged`.
    public mutating func set(_ range: Range<Int>, plugged: Bool) {
        for block in range {
            if plugged { words[block / 64] |= 1 << UInt64(block % 64) } else { words[block / 64] &= ~(1 << UInt64(block % 64)) }
        }
    }

    /// Unplugs every block.
    public mutating func clear() {
        for index in words.indices { words[index] = 0 }
    }

    /// How many blocks are plugged.
    public var pluggedCount: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// The runs of consecutive plugged blocks, in order.
    public var pluggedRuns: [Range<Int>] {
        var runs: [Range<Int>] = []
        var start: Int?
        for block in 0...count {
            let plugged = block < count && isPlugged(block)
            if plugged, start == nil { start = block }
            if !plugged, let first = start {
                runs.append(first..<block)
                start = nil
            }
        }
        return runs
    }
}
