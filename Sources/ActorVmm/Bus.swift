/// What a bus range leads to.
public enum BusTarget: Sendable {
    /// An actor device, reached through the exit hand-off.
    case device(any BusDevice)
    /// A thread-safe handler called directly on the vCPU thread (the benchmarks' floor).
    case raw(any RawBusDevice)
    /// An indirection that picks the target per access (PCI configuration mechanism #1).
    case router(any BusRouter)
}

/// Resolves an access to another target, or handles it itself. Runs on the vCPU thread, so it must be
/// thread-safe on its own (atomics, immutable tables).
public protocol BusRouter: Sendable {
    /// `write` is the value for a write, nil for a read.
    func resolve(offset: UInt64, width: Int, write: UInt64?) -> BusRoute
}

/// What a ``BusRouter`` decided for one access.
public enum BusRoute: Sendable {
    /// Handled; for a read, this is the value.
    case handled(UInt64)
    /// Forward to `target` at `offset` (not to another router).
    case forward(BusTarget, offset: UInt64)
}

/// Errors building a bus.
public enum BusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Two devices claim overlapping ranges.
    case overlap(name: String, base: UInt64, other: String)
    /// A range is empty or wraps around.
    case invalidRange(name: String, base: UInt64, size: UInt64)

    public var description: String {
        switch self {
        case .overlap(let name, let base, let other):
            return "bus range of \(name) at 0x\(String(base, radix: 16)) overlaps \(other)"
        case .invalidRange(let name, let base, let size):
            return "bus range of \(name) at 0x\(String(base, radix: 16)) with size \(size) is invalid"
        }
    }
}

/// An immutable, sorted table of address ranges → devices, shared by all vCPU threads without locks.
/// Built once before the vCPUs start; a new table replaces it wholesale (none is mutated in place).
public struct Bus: Sendable {
    public struct Entry: Sendable {
        public let name: String
        public let base: UInt64
        public let size: UInt64
        public let target: BusTarget
        /// What the vCPU threads have delivered to this range (one object per range unless shared).
        public let counters: DeviceCounters
    }

    public let entries: [Entry]

    public init() { entries = [] }

    private init(sorted: [Entry]) { entries = sorted }

    /// A new bus with `target` added at [base, base+size), counting its accesses in `counters`.
    public func inserting(name: String, base: UInt64, size: UInt64, _ target: BusTarget,
                          counters: DeviceCounters = DeviceCounters()) throws(BusError) -> Bus {
        guard size > 0, base.addingReportingOverflow(size - 1).overflow == false else {
            throw .invalidRange(name: name, base: base, size: size)
        }
        let last = base + (size - 1)
        for entry in entries where base <= entry.base + (entry.size - 1) && entry.base <= last {
            throw .overlap(name: name, base: base, other: entry.name)
        }
        var all = entries
        all.append(Entry(name: name, base: base, size: size, target: target, counters: counters))
        all.sort { $0.base < $1.base }
        return Bus(sorted: all)
    }

    /// The entry containing `address` and the offset into it, by binary search.
    @inline(__always)
    public func lookup(_ address: UInt64) -> (entry: Entry, offset: UInt64)? {
        var low = 0, high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].base <= address { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return nil }
        let entry = entries[low - 1]
        let offset = address - entry.base
        return offset < entry.size ? (entry, offset) : nil
    }
}
