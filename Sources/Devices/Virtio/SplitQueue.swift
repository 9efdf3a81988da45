import ActorVmm
import CKvm

/// The device side of a virtio split virtqueue (virtio 1.2 §2.7).
///
/// The driver configures `size` and the three areas through the transport; the device then pops requests
/// from the available ring and returns them on the used ring. The queue never owns guest memory: every method
/// takes the `GuestMemory` it reads, and every guest-controlled value is validated before use — indices
/// against the size, buffers against RAM, chains against loops — so a hostile driver can fail its own
/// requests (they come back unused) or break its own queue, never the VMM.
///
/// Layout (§2.7, "Alignment": table 16, available ring 2, used ring 4):
/// ```
/// descriptor table: size × { addr: u64, len: u32, flags: u16, next: u16 }
/// available ring:   flags: u16, idx: u16, ring: size × u16, used_event: u16
/// used ring:        flags: u16, idx: u16, ring: size × { id: u32, len: u32 }, avail_event: u16
/// ```
public struct SplitQueue: Sendable {
    public static let maxSize: UInt16 = 256
    static let descriptorSize: UInt64 = 16
    static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4

    // Driver-visible configuration (through the common configuration structure).
    public var size: UInt16 = SplitQueue.maxSize
    public var ready = false
    public var descriptorTable = GuestAddress(0)
    public var availableRing = GuestAddress(0)
    public var usedRing = GuestAddress(0)
    public var msixVector: UInt16 = 0xFFFF

    // Negotiated features that change the queue's behaviour.
    public var eventIndex = false
    public var indirectDescriptors = false

    // Device-private state.
    var nextAvailable: UInt16 = 0
    var nextUsed: UInt16 = 0
    /// The used index at the last interrupt (event-index suppression needs it).
    var signalledUsed: UInt16 = 0
    var signalledValid = false

    public init() {}

    /// A queue whose size (before the driver picks one) is `size`, the most the device offers.
    init(size: UInt16) { self.size = size }

    /// Back to the reset state (§2.1, device reset); the offered size stays what the device offers.
    public mutating func reset(size: UInt16 = SplitQueue.maxSize) { self = SplitQueue(size: size) }

    /// Checks size and areas before the queue is used (at DRIVER_OK or queue_enable).
    public func validate(memory: GuestMemory) throws(QueueError) {
        guard size > 0, size <= Self.maxSize, size & (size - 1) == 0 else {
            throw .invalidConfiguration("size \(size) is not a power of 2 up to \(Self.maxSize)")
        }
        let n = UInt64(size)
        let areas: [(String, GuestAddress, UInt64, UInt64)] = [
            ("descriptor table", descriptorTable, 16, Self.descriptorSize * n),
            ("available ring", availableRing, 2, 6 + 2 * n),
            ("used ring", usedRing, 4, 6 + 8 * n),
        ]
        for (name, address, alignment, length) in areas {
            guard address.rawValue % alignment == 0 else {
                throw .ringOutsideMemory("\(name) at \(address) is not \(alignment)-byte aligned")
            }
            guard memory.contains(address, count: Int(length)) else {
                throw .ringOutsideMemory("\(name) at \(address) (\(length) bytes)")
            }
        }
    }

    // MARK: - Available ring

    /// Pops the next request, or returns nil when the driver has published nothing new. A malformed chain
    /// is consumed and thrown as ``QueueError/rejectedChain(head:reason:)``: give it back with
    /// ``returnUnused(head:memory:)``.
    public mutating func pop(memory: GuestMemory) throws(QueueError) -> DescriptorChain? {
        var buffers = ChainBuffers()
        guard let head = try pop(memory: memory, into: &buffers) else { return nil }
        return DescriptorChain(head: head, readable: buffers.readable, writable: buffers.writable)
    }

    /// ``pop(memory:)`` without building a chain: the request's buffers replace what `buffers` held (its
    /// storage is reused, so a steady stream of requests allocates nothing); returns the head, or nil.
    public mutating func pop(memory: GuestMemory, into buffers: inout ChainBuffers) throws(QueueError) -> UInt16? {
        // One look-up for the whole ring (flags, idx, ring[size]) instead of one per field.
        guard availableRing.rawValue & 1 == 0 else { throw .memory(.outOfRange(availableRing, count: 2)) }
        let ring: UnsafeMutableRawPointer
        do {
            ring = try memory.hostPointer(availableRing, 4 + 2 * Int(size))
        } catch {
            throw .memory(error)
        }
        // SAFETY: idx (offset 2, 2-byte aligned: the ring is) and ring[slot] (slot < size) lie in the range
        // just checked; the guest writes them concurrently, so each is read once and validated below.
        let published = UInt16(littleEndian: ckvm_load_acquire_u16(ring + 2))
        let pending = published &- nextAvailable
        if pending == 0 { return nil }
        guard pending <= size else { throw .availIndexJump(from: nextAvailable, to: published) }
        let slot = Int(nextAvailable % size)
        let head = UInt16(littleEndian: ring.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self))
        nextAvailable &+= 1
        guard head < size else { throw .headOutOfRange(head) }
        do {
            try walkChain(head: head, memory: memory, into: &buffers)
            return head
        } catch {
            throw .rejectedChain(head: head, reason: error)
        }
    }

    /// Walks and validates the chain starting at `head`.
    func parseChain(head: UInt16, memory: GuestMemory) throws(QueueError) -> DescriptorChain {
        var buffers = ChainBuffers()
        try walkChain(head: head, memory: memory, into: &buffers)
        return DescriptorChain(head: head, readable: buffers.readable, writable: buffers.writable)
    }

    /// Walks and validates the chain starting at `head` into `buffers` (emptied first, storage kept).
    func walkChain(head: UInt16, memory: GuestMemory, into buffers: inout ChainBuffers) throws(QueueError) {
        buffers.removeAll()
        var tableSize = size, index = head
        // The table (tableSize × 16 bytes) is checked against guest RAM once, then each descriptor is read
        // from it with two 8-byte loads (addr; len | flags << 32 | next << 48).
        var table: UnsafeRawPointer
        do {
            table = UnsafeRawPointer(try memory.hostPointer(descriptorTable, Int(tableSize) * Int(Self.descriptorSize)))
        } catch {
            throw .memory(error)
        }
        var budget = Int(size)  // descriptors left before we call it a loop
        var inIndirect = false
        while true {
            guard index < tableSize else { throw .descriptorIndexOutOfRange(index) }
            guard budget > 0 else { throw .chainTooLong }
            budget -= 1
            // SAFETY: index < tableSize, and the table's tableSize × 16 bytes lie in guest RAM (checked above).
            let entry = table + Int(index) * Int(Self.descriptorSize)
            let address = UInt64(littleEndian: entry.loadUnaligned(as: UInt64.self))
            let word = UInt64(littleEndian: entry.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            let length = UInt32(truncatingIfNeeded: word)
            let flags = UInt16(truncatingIfNeeded: word >> 32), next = UInt16(truncatingIfNeeded: word >> 48)
            if flags & Self.flagIndirect != 0 {
                guard indirectDescriptors else { throw .invalidIndirect("indirect descriptors were not negotiated") }
                guard !inIndirect else { throw .invalidIndirect("an indirect table inside an indirect table") }
                guard flags & Self.flagNext == 0 else { throw .invalidIndirect("NEXT set on an indirect descriptor") }
                guard length > 0, length % 16 == 0, length / 16 <= UInt32(UInt16.max) else {
                    throw .invalidIndirect("table length \(length) is not a non-zero multiple of 16")
                }
                guard let indirect = try? memory.hostPointer(GuestAddress(address), Int(length)) else {
                    throw .bufferOutsideMemory(GuestAddress(address), length: length)
                }
                inIndirect = true
                table = UnsafeRawPointer(indirect)
                tableSize = UInt16(length / 16)
                budget = Int(tableSize)
                index = 0
                continue
            }
            guard (try? memory.hostPointer(GuestAddress(address), Int(length))) != nil else {
                throw .bufferOutsideMemory(GuestAddress(address), length: length)
            }
            let buffer = GuestBuffer(address: GuestAddress(address), length: length)
            if flags & Self.flagWrite != 0 {
                buffers.writable.append(buffer)
            } else {
                guard buffers.writable.isEmpty else { throw .readableAfterWritable }
                buffers.readable.append(buffer)
            }
            guard flags & Self.flagNext != 0 else { break }
            index = next
        }
    }

    // MARK: - Used ring

    /// Returns a request to the driver with `written` bytes placed in its writable buffers. Consumes the
    /// chain, so a request cannot be completed twice.
    public mutating func complete(_ chain: consuming DescriptorChain, written: UInt32,
                                  memory: GuestMemory) throws(QueueError) {
        try pushUsed(head: chain.head, written: written, memory: memory)
    }

    /// Returns a rejected request (see ``pop(memory:)``) to the driver with length 0.
    public mutating func returnUnused(head: UInt16, memory: GuestMemory) throws(QueueError) {
        try pushUsed(head: head, written: 0, memory: memory)
    }

    /// Returns the request popped as `head` by ``pop(memory:into:)`` with `written` bytes: the caller
    /// completes each head it popped exactly once (the chain's ~Copyable guarantee, kept by hand).
    public mutating func complete(head: UInt16, written: UInt32, memory: GuestMemory) throws(QueueError) {
        try pushUsed(head: head, written: written, memory: memory)
    }

    /// ``addUsed(head:written:memory:)`` and ``publishUsed(memory:)`` with one look-up of the ring.
    private mutating func pushUsed(head: UInt16, written: UInt32, memory: GuestMemory) throws(QueueError) {
        let ring = try usedRingPointer(memory: memory)
        storeUsed(head: head, written: written, ring: ring)
        // SAFETY: as in publishUsed.
        ckvm_store_release_u16(ring + 2, nextUsed.littleEndian)
    }

    /// Writes the used entry of request `head` without publishing it: the driver sees it at the next
    /// ``publishUsed(memory:)``, together with the others added meanwhile (the buffers of one received frame
    /// must appear at once: the driver reads them all when it sees the first). The caller completes each
    /// request it holds exactly once.
    public mutating func addUsed(head: UInt16, written: UInt32, memory: GuestMemory) throws(QueueError) {
        storeUsed(head: head, written: written, ring: try usedRingPointer(memory: memory))
    }

    /// Writes the next used entry { id: u32, len: u32 } with one 8-byte store into `ring` (checked by
    /// ``usedRingPointer(memory:)``).
    private mutating func storeUsed(head: UInt16, written: UInt32, ring: UnsafeMutableRawPointer) {
        // SAFETY: slot < size: the entry's 8 bytes at 4 + 8 × slot lie in the checked ring.
        let slot = Int(nextUsed % size)
        ring.storeBytes(of: (UInt64(written) << 32 | UInt64(head)).littleEndian, toByteOffset: 4 + 8 * slot, as: UInt64.self)
        nextUsed &+= 1
    }

    /// Publishes the used entries added so far (the used index, after the entries).
    public func publishUsed(memory: GuestMemory) throws(QueueError) {
        let ring = try usedRingPointer(memory: memory)
        // SAFETY: idx is at offset 2 of the ring just checked, 2-byte aligned (the ring is 4-byte aligned).
        ckvm_store_release_u16(ring + 2, nextUsed.littleEndian)
    }

    /// The used ring's flags, idx and entries (4 + 8 × size bytes), checked against guest RAM in one look-up.
    private func usedRingPointer(memory: GuestMemory) throws(QueueError) -> UnsafeMutableRawPointer {
        guard usedRing.rawValue & 3 == 0 else { throw .memory(.outOfRange(usedRing, count: 4)) }
        do {
            return try memory.hostPointer(usedRing, 4 + 8 * Int(size))
        } catch {
            throw .memory(error)
        }
    }

    /// Puts the request back so the next ``pop(memory:)`` returns it again (e.g. no room on the host side).
    public mutating func undoPop(_ chain: consuming DescriptorChain) {
        _ = chain
        nextAvailable &-= 1
    }

    /// Whether the driver wants an interrupt for what was completed since the last one (§2.7.10: with
    /// EVENT_IDX, only when `used_event` was crossed; otherwise unless VIRTQ_AVAIL_F_NO_INTERRUPT is set).
    public mutating func needsInterrupt(memory: GuestMemory) -> Bool {
        memory.fence()  // the used index must be visible before we read the driver's suppression state
        if !eventIndex {
            let flags: UInt16 = (try? memory.read(at: availableRing)) ?? 0
            return flags & 1 == 0
        }
        guard let usedEvent: UInt16 = try? memory.read(at: availableRing.adding(4 + 2 * UInt64(size))) else { return true }
        let old = signalledUsed, new = nextUsed
        let wasValid = signalledValid
        signalledUsed = new
        signalledValid = true
        // vring_need_event: (new - event - 1) < (new - old)
        return !wasValid || (new &- usedEvent &- 1) < (new &- old)
    }

    /// With EVENT_IDX, asks the driver to notify when it publishes past what we have seen (`avail_event`).
    public func requestNotification(memory: GuestMemory) {
        guard eventIndex else { return }
        try? memory.write(nextAvailable, at: usedRing.adding(4 + 8 * UInt64(size)))
        memory.fence()
    }

    /// True if the driver has published requests we have not popped.
    public func hasPending(memory: GuestMemory) -> Bool {
        guard let published = try? memory.loadAcquire16(at: availableRing.adding(2)) else { return false }
        return published != nextAvailable
    }
}

extension GuestAddress {
    /// `self + offset` for offsets inside a validated area (wrapping is impossible there).
    func adding(_ offset: UInt64) -> GuestAddress { GuestAddress(rawValue &+ offset) }
}
