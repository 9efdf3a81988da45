import ActorVmm

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
        let published: UInt16
        do {
            published = try memory.loadAcquire16(at: availableRing.adding(2))
        } catch {
            throw .memory(error)
        }
        let pending = published &- nextAvailable
        if pending == 0 { return nil }
        guard pending <= size else { throw .availIndexJump(from: nextAvailable, to: published) }
        let slot = UInt64(nextAvailable % size)
        let head: UInt16
        do {
            head = try memory.read(at: availableRing.adding(4 + 2 * slot))
        } catch {
            throw .memory(error)
        }
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
        var table = descriptorTable, tableSize = size, index = head
        var budget = Int(size)  // descriptors left before we call it a loop
        var inIndirect = false
        while true {
            guard index < tableSize else { throw .descriptorIndexOutOfRange(index) }
            guard budget > 0 else { throw .chainTooLong }
            budget -= 1
            let at = table.adding(UInt64(index) * Self.descriptorSize)
            let address: UInt64, length: UInt32, flags: UInt16, next: UInt16
            do {
                address = try memory.read(at: at)
                length = try memory.read(at: at.adding(8))
                flags = try memory.read(at: at.adding(12))
                next = try memory.read(at: at.adding(14))
            } catch {
                throw .memory(error)
            }
            if flags & Self.flagIndirect != 0 {
                guard indirectDescriptors else { throw .invalidIndirect("indirect descriptors were not negotiated") }
                guard !inIndirect else { throw .invalidIndirect("an indirect table inside an indirect table") }
                guard flags & Self.flagNext == 0 else { throw .invalidIndirect("NEXT set on an indirect descriptor") }
                guard length > 0, length % 16 == 0, length / 16 <= UInt32(UInt16.max) else {
                    throw .invalidIndirect("table length \(length) is not a non-zero multiple of 16")
                }
                guard memory.contains(GuestAddress(address), count: Int(length)) else {
                    throw .bufferOutsideMemory(GuestAddress(address), length: length)
                }
                inIndirect = true
                table = GuestAddress(address)
                tableSize = UInt16(length / 16)
                budget = Int(tableSize)
                index = 0
                continue
            }
            guard memory.contains(GuestAddress(address), count: Int(length)) else {
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

    private mutating func pushUsed(head: UInt16, written: UInt32, memory: GuestMemory) throws(QueueError) {
        try addUsed(head: head, written: written, memory: memory)
        try publishUsed(memory: memory)
    }

    /// Writes the used entry of request `head` without publishing it: the driver sees it at the next
    /// ``publishUsed(memory:)``, together with the others added meanwhile (the buffers of one received frame
    /// must appear at once: the driver reads them all when it sees the first). The caller completes each
    /// request it holds exactly once.
    public mutating func addUsed(head: UInt16, written: UInt32, memory: GuestMemory) throws(QueueError) {
        let slot = UInt64(nextUsed % size)
        let entry = usedRing.adding(4 + 8 * slot)
        do {
            try memory.write(UInt32(head), at: entry)
            try memory.write(written, at: entry.adding(4))
        } catch {
            throw .memory(error)
        }
        nextUsed &+= 1
    }

    /// Publishes the used entries added so far (the used index, after the entries).
    public func publishUsed(memory: GuestMemory) throws(QueueError) {
        do {
            try memory.storeRelease16(nextUsed, at: usedRing.adding(2))
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
