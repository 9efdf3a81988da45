import CKvm
import Glibc

/// A guest-physical address. Arithmetic that could overflow is explicit (`checkedAdding`).
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// `self + offset`, or nil if that overflows 64 bits.
    public func checkedAdding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// Why a guest-memory access was refused.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The range [address, address+count) is not entirely inside one RAM region.
    case outOfRange(GuestAddress, count: Int)
    /// The host could not allocate guest RAM.
    case allocationFailed(size: UInt64, errno: Int32)
    /// Regions overlap, are empty, or are not page-aligned.
    case invalidLayout(String)

    public var description: String {
        switch self {
        case .outOfRange(let address, let count):
            return "guest memory access of \(count) bytes at \(address) is outside guest RAM"
        case .allocationFailed(let size, let errno):
            return "cannot allocate \(size >> 20) MiB of guest RAM: \(Errno(rawValue: errno))"
        case .invalidLayout(let why):
            return "invalid guest memory layout: \(why)"
        }
    }
}

import CKvm
import EpollLoop
import Synchronization

/// Guest RAM: anonymous host mappings, one per region, and bounds-checked access to them.
///
/// Device and boot code see only `read`/`write` on guest addresses, never a host pointer: every access is
/// checked to lie entirely within one region, so a hostile guest-supplied address is an error for that
/// request, never a host access outside guest RAM. The guest writes this memory concurrently; callers copy
/// what they need once and validate the copy.
public final class GuestMemory: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): the regions are an immutable `RegionTable`; adding RAM publishes a new
    // table with one atomic store and never frees or changes an older one before deinit (`tables` keeps
    // each alive), so a reader on any thread that loaded a table uses a complete, valid list. Every byte
    // access goes through the bounds checks below, and the mappings live until deinit, when no reference
    // (and no vCPU) remains.

    public struct Region: Sendable {
        public let start: GuestAddress
        public let size: UInt64
        /// Host address of the mapping; for registering the region with KVM only (package access).
        @usableFromInline package let hostAddress: UInt

        public var end: UInt64 { start.rawValue + size }
    }

    /// One published list of regions, sorted by address. Never mutated.
    @usableFromInline final class RegionTable: Sendable {
        @usableFromInline let regions: [Region]
        init(_ regions: [Region]) { self.regions = regions }
    }

    /// The current table, as an unretained pointer (readers load it with acquire ordering).
    @usableFromInline let current: Atomic<UInt>
    /// Every table ever published, newest last; writers serialize on it.
    private let tables: Mutex<[RegionTable]>

    /// The RAM regions, sorted by address.
    public var regions: [Region] { withRegions { $0 } }

    /// Total RAM in bytes.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Runs `body` on the current regions without retaining the table (it lives until deinit).
    @inlinable @inline(__always)
    func withRegions<R>(_ body: ([Region]) -> R) -> R {
        let bits = current.load(ordering: .acquiring)
        // SAFETY: `bits` is a table `tables` keeps alive until deinit.
        return Unmanaged<RegionTable>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)._withUnsafeGuaranteedRef { body($0.regions) }
    }

    /// Maps `layout` (start, size) regions of zero-filled RAM. Sizes and starts must be 4 KiB aligned,
    /// non-empty and non-overlapping.
    public init(layout: [(start: GuestAddress, size: UInt64)]) throws(GuestMemoryError) {
        var regions: [Region] = []
        let sorted = layout.sorted { $0.start < $1.start }
        var previousEnd: UInt64 = 0
        for (index, (start, size)) in sorted.enumerated() {
            guard index == 0 || start.rawValue >= previousEnd else {
                for region in regions { Self.unmap(region) }
                throw .invalidLayout("region at \(start) overlaps the previous one")
            }
            do throws(GuestMemoryError) {
                regions.append(try Self.map(start: start, size: size))
            } catch {
                for region in regions { Self.unmap(region) }
                throw error
            }
            previousEnd = start.rawValue + size
        }
        let table = RegionTable(regions)
        tables = Mutex([table])
        current = Atomic(UInt(bitPattern: Unmanaged.passUnretained(table).toOpaque()))
    }

    /// Maps one region of zero-filled RAM (not yet visible to readers).
    private static func map(start: GuestAddress, size: UInt64) throws(GuestMemoryError) -> Region {
        guard size > 0, size & 0xFFF == 0, start.rawValue & 0xFFF == 0 else {
            throw .invalidLayout("region at \(start) of \(size) bytes is empty or not 4 KiB aligned")
        }
        guard start.checkedAdding(size) != nil else { throw .invalidLayout("region at \(start) overflows") }
        let mapping = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapping, mapping != MAP_FAILED else { throw .allocationFailed(size: size, errno: Errno.current.rawValue) }
        mark(mapping, size: Int(size))
        return Region(start: start, size: size, hostAddress: UInt(bitPattern: mapping))
    }

    private static func unmap(_ region: Region) {
        munmap(UnsafeMutableRawPointer(bitPattern: region.hostAddress), Int(region.size))
    }

    /// Adds a region of zero-filled RAM at run time (memory hotplug), above every existing region.
    /// `register` runs with the new region before any reader can see it (to give it to KVM as memory slot
    /// `slot`, its index); if it throws, the mapping is undone and the error rethrown. Then the region is
    /// published: accesses from any thread may use it from then on. Returns the new region.
    @discardableResult
    public func append<E: Error>(start: GuestAddress, size: UInt64,
                                 register: (_ region: Region, _ slot: Int) throws(E) -> Void) throws(GuestMemoryAppendError<E>) -> Region {
        try tables.withLock { (tables: inout [RegionTable]) throws(GuestMemoryAppendError<E>) -> Region in
            let existing = tables.last!.regions
            if let last = existing.last, start.rawValue < last.end {
                throw .memory(.invalidLayout("new region at \(start) is not above the existing RAM (which ends at \(GuestAddress(last.end)))"))
            }
            let region: Region
            do throws(GuestMemoryError) { region = try Self.map(start: start, size: size) } catch { throw .memory(error) }
            do throws(E) {
                try register(region, existing.count)
            } catch {
                Self.unmap(region)
                throw .register(error)
            }
            let table = RegionTable(existing + [region])
            tables.append(table)
            current.store(UInt(bitPattern: Unmanaged.passUnretained(table).toOpaque()), ordering: .releasing)
            return region
        }
    }

    /// The name guest RAM mappings carry in /proc/PID/maps and smaps (`[anon:actor-vmm-guest-ram]`).
    public static let mappingName = "actor-vmm-guest-ram"

    /// Marks a new RAM mapping: not copied into a forked child (`MADV_DONTFORK`, as Cloud Hypervisor and
    /// QEMU do), and named where the kernel can name anonymous mappings. Both also keep the kernel from
    /// merging it with a neighbouring anonymous mapping (a malloc arena, a thread stack), so it stays one
    /// mapping of exactly the guest's size that tools and the benchmark can find by name.
    static func mark(_ mapping: UnsafeMutableRawPointer, size: Int) {
        _ = madvise(mapping, size, MADV_DONTFORK)
        _ = ckvm_name_mapping(mapping, size, mappingName)  // EINVAL without CONFIG_ANON_VMA_NAME: unnamed
    }

    deinit {
        for region in regions { Self.unmap(region) }
    }

    /// The host pointer for [address, address+count) if it lies within one region.
    @inlinable @inline(__always)
    package func hostPointer(_ address: GuestAddress, _ count: Int) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        guard count >= 0 else { throw .outOfRange(address, count: count) }
        let a = address.rawValue
        let pointer = withRegions { (regions: [Region]) -> UnsafeMutableRawPointer? in
            for region in regions where a >= region.start.rawValue {
                let offset = a - region.start.rawValue
                guard offset < region.size || (offset == region.size && count == 0) else { continue }
                guard UInt64(count) <= region.size - offset else { break }
                // SAFETY: offset + count <= region.size, checked just above.
                return UnsafeMutableRawPointer(bitPattern: region.hostAddress)! + Int(offset)
            }
            return nil
        }
        guard let pointer else { throw .outOfRange(address, count: count) }
        return pointer
    }

    /// True if [address, address+count) lies within one RAM region.
    public func contains(_ address: GuestAddress, count: Int) -> Bool {
        (try? hostPointer(address, count)) != nil
    }

    /// Reads a little-endian integer.
    @inlinable @inline(__always)
    public func read<T: FixedWidthInteger>(_: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let pointer = try hostPointer(address, MemoryLayout<T>.size)
        return T(littleEndian: pointer.loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer.
    @inlinable @inline(__always)
    public func write<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let pointer = try hostPointer(address, MemoryLayout<T>.size)
        pointer.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Copies `count` bytes out of guest memory.
    public func readBytes(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        let pointer = try hostPointer(address, count)
        return [UInt8](UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Copies guest bytes into `buffer`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        let pointer = try hostPointer(address, buffer.count)
        if let base = buffer.baseAddress { base.copyMemory(from: pointer, byteCount: buffer.count) }
    }

    /// Copies `bytes` into guest memory.
    public func write(bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        let pointer = try hostPointer(address, bytes.count)
        if let base = bytes.baseAddress { pointer.copyMemory(from: base, byteCount: bytes.count) }
    }

    /// Copies `bytes` into guest memory.
    public func write(bytes: [UInt8], at address: GuestAddress) throws(GuestMemoryError) {
        let pointer = try hostPointer(address, bytes.count)
        bytes.withUnsafeBytes { buffer in
            if let base = buffer.baseAddress { pointer.copyMemory(from: base, byteCount: buffer.count) }
        }
    }

    /// Sets `count` bytes to zero. Whole pages of a large range are dropped (`MADV_DONTNEED`: guest RAM is a
    /// private anonymous mapping, so they read as zero afterwards) instead of written, so that zeroing a
    /// kernel's BSS in fresh RAM costs neither the page faults nor the host memory of touching every page;
    /// the partial pages at either end are written.
    public func zero(at address: GuestAddress, count: Int) throws(GuestMemoryError) {
        let pointer = try hostPointer(address, count)
        let page = 4096
        let start = Int(bitPattern: pointer)
        let firstWhole = (start + page - 1) & ~(page - 1), endWhole = (start + count) & ~(page - 1)
        guard count >= GuestMemory.zeroByDroppingPagesFrom, endWhole > firstWhole else {
            memset(pointer, 0, count)
            return
        }
        // SAFETY: [pointer, pointer+count) lies inside one live mapping of guest RAM (hostPointer checked
        // it); the page-aligned middle is a sub-range of it, the two ends are the rest.
        let head = firstWhole - start, middle = endWhole - firstWhole
        memset(pointer, 0, head)
        if !GuestMemory.dropPages(pointer + head, middle) { memset(pointer + head, 0, middle) }
        memset(pointer + head + middle, 0, count - head - middle)
    }

    /// Below this many bytes ``zero(at:count:)`` writes zeros (cheaper than a system call).
    static let zeroByDroppingPagesFrom = 64 << 10

    /// Reads a 16-bit value with acquire ordering: later reads of guest memory are not reordered before it.
    /// For ring indices the guest publishes (virtio `avail.idx`).
    @inlinable
    public func loadAcquire16(at address: GuestAddress) throws(GuestMemoryError) -> UInt16 {
        guard address.rawValue & 1 == 0 else { throw .outOfRange(address, count: 2) }
        return UInt16(littleEndian: ckvm_load_acquire_u16(try hostPointer(address, 2)))
    }

    /// Writes a 16-bit value with release ordering: earlier writes to guest memory are visible before it.
    /// For ring indices the device publishes (virtio `used.idx`).
    @inlinable
    public func storeRelease16(_ value: UInt16, at address: GuestAddress) throws(GuestMemoryError) {
        guard address.rawValue & 1 == 0 else { throw .outOfRange(address, count: 2) }
        ckvm_store_release_u16(try hostPointer(address, 2), value.littleEndian)
    }

    /// Atomically compares the 16 bytes at `address` (16-byte aligned) with `expected` (low, high quadword)
    /// and, if equal, replaces them with `desired`; returns whether it did and the value found. A host
    /// `lock cmpxchg16b`: atomic against every vCPU and device touching the same memory, as the guest's own
    /// instruction would be. For emulating `cmpxchg16b`. A misaligned address is refused.
    public func compareExchange128(at address: GuestAddress, expected: (UInt64, UInt64),
                                   desired: (UInt64, UInt64)) throws(GuestMemoryError) -> (exchanged: Bool, found: (UInt64, UInt64)) {
        guard address.rawValue & 15 == 0 else { throw .outOfRange(address, count: 16) }
        let pointer = try hostPointer(address, 16)
        var compare: (UInt64, UInt64) = (expected.0.littleEndian, expected.1.littleEndian)
        var replace: (UInt64, UInt64) = (desired.0.littleEndian, desired.1.littleEndian)
        let exchanged = withUnsafeMutableBytes(of: &compare) { compareBytes in
            withUnsafeMutableBytes(of: &replace) { replaceBytes in
                ckvm_cmpxchg16b(pointer, compareBytes.baseAddress!.assumingMemoryBound(to: UInt64.self),
                                replaceBytes.baseAddress!.assumingMemoryBound(to: UInt64.self)) != 0
            }
        }
        return (exchanged, (UInt64(littleEndian: compare.0), UInt64(littleEndian: compare.1)))
    }

    /// A full memory fence (between publishing used entries and reading the driver's event index).
    @inlinable
    public func fence() { ckvm_fence_seq_cst() }

    /// Gives `body` a host view of [address, address+count) for one system call (pread/pwrite/readv).
    /// The view must not escape `body`; the range is checked first.
    package func withHostBytes<R>(at address: GuestAddress, count: Int,
                                  _ body: (UnsafeMutableRawBufferPointer) -> R) throws(GuestMemoryError) -> R {
        let pointer = try hostPointer(address, count)
        return body(UnsafeMutableRawBufferPointer(start: pointer, count: count))
    }

    /// Reads a NUL-terminated string of at most `limit` bytes (without the NUL).
    public func readCString(at address: GuestAddress, limit: Int) throws(GuestMemoryError) -> [UInt8] {
        var bytes: [UInt8] = []
        var cursor = address
        while bytes.count < limit {
            let byte: UInt8 = try read(at: cursor)
            if byte == 0 { break }
            bytes.append(byte)
            guard let next = cursor.checkedAdding(1) else { break }
            cursor = next
        }
        return bytes
    }
}

/// Why RAM could not be added at run time: the mapping, or the caller's registration (KVM).
public enum GuestMemoryAppendError<E: Error>: Error {
    case memory(GuestMemoryError)
    case register(E)
}
