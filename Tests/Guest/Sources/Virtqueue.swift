// Virtqueue.swift: the driver side of a virtio split virtqueue (virtio 1.2 §2.7), and the
// guest memory that rings and buffers live in.
//
// One 4 KiB page per queue (queues here have at most 16 entries):
//
//     0x000  descriptor table   size × { addr: u64, len: u32, flags: u16, next: u16 }   (align 16)
//     0x100  available ring     flags: u16, idx: u16, ring: size × u16, used_event: u16 (align 2)
//     0x200  used ring          flags: u16, idx: u16, ring: size × { id: u32, len: u32 },
//                               avail_event: u16                                        (align 4)
//     0x400  indirect tables    one per head, `maxChain` descriptors each
//
// The device reads and writes this page concurrently, so ring fields are accessed through an
// `MmioBlock` (one volatile `mov` each, Hardware.h), and publishing follows §2.7.13: fill the
// descriptors, put the head in the available ring, barrier, then bump `avail.idx`.

/// A bump allocator over the DMA arena (start.S). Each device check calls `reset()` first and
/// resets its devices when done, so the memory is free again for the next one.
enum DmaMemory {
    nonisolated(unsafe) private static var used = 0

    static func reset() { used = 0 }

    /// `bytes` of zeroed memory aligned to `alignment` (a power of 2); its guest-physical address.
    /// Running out is a bug in the guest: it reports like an exception and powers off.
    static func allocate(_ bytes: Int, alignment: Int = 4096) -> UInt64 {
        let start = (used + alignment - 1) & ~(alignment - 1)
        guard start + bytes <= Int(DMA_ARENA_SIZE) else {
            var console = Serial.com1
            console.write("GUEST BUG: DMA arena exhausted\n")
            CPU.powerOff()
        }
        let words = (bytes + 7) / 8
        used = start + words * 8
        let address = dma_arena_address() + UInt64(start)
        memory_fill64(address, 0, UInt64(words))
        return address
    }

    /// The bytes at guest-physical `address` (identity-mapped), for filling and checking buffers.
    static func bytesAt(_ address: UInt64, _ count: Int) -> UnsafeMutableBufferPointer<UInt8> {
        UnsafeMutableBufferPointer(start: UnsafeMutablePointer(bitPattern: UInt(address)), count: count)
    }
}

/// One buffer of a request: device-readable (the driver filled it) or device-writable.
struct Buffer {
    var address: UInt64
    var length: UInt32
    var deviceWritable: Bool
}

/// The buffers of one request, in order: readable ones first, then writable ones (§2.7.4.2).
struct BufferChain {
    private(set) var buffers = InlineArray<4, Buffer>(repeating: Buffer(address: 0, length: 0, deviceWritable: false))
    private(set) var count = 0

    mutating func readable(_ address: UInt64, _ length: Int) { append(address, length, writable: false) }
    mutating func writable(_ address: UInt64, _ length: Int) { append(address, length, writable: true) }

    private mutating func append(_ address: UInt64, _ length: Int, writable: Bool) {
        guard count < buffers.count else { return }  // Virtqueue.maxChain: callers stay below
        buffers[count] = Buffer(address: address, length: UInt32(length), deviceWritable: writable)
        count += 1
    }
}

/// A buffer the device has returned: the head of its chain and how many bytes it wrote.
struct UsedBuffer {
    let head: UInt16
    let length: UInt32
}

struct Virtqueue {
    static let maxSize = 16
    static let maxChain = 4

    // Descriptor flags.
    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4

    // Offsets in the queue's page.
    static let descriptorTableOffset = 0x000
    static let availableRingOffset = 0x100
    static let usedRingOffset = 0x200
    static let indirectTablesOffset = 0x400

    let index: UInt16
    let size: Int
    /// The IDT vector this queue's MSI-X entry raises.
    let vector: UInt8
    /// Where a write of `index` tells the device there is new work.
    let notifyAddress: UInt64
    /// The queue's page, see the layout above.
    let page: UInt64
    private var memory: MmioBlock { MmioBlock(base: page) }

    /// Free descriptors, a stack of indices.
    private var free = InlineArray<16, UInt16>(repeating: 0)
    private var freeCount = 0
    /// Our copy of avail.idx and the used index we have consumed up to.
    private var nextAvailable: UInt16 = 0
    private var lastUsed: UInt16 = 0
    /// Completions only found after waiting timed out: their interrupt never came.
    private(set) var missedInterrupts = 0
    /// The vector's count when the queue was set up (vectors are reused by later devices).
    private let interruptsBefore: UInt32
    /// Used elements whose id was no head we had made available: a device bug.
    private(set) var badUsedIDs = 0

    init(index: UInt16, size: Int, vector: UInt8, notifyAddress: UInt64) {
        self.index = index
        self.size = size
        self.vector = vector
        self.notifyAddress = notifyAddress
        interruptsBefore = Interrupts.count(of: vector)
        page = DmaMemory.allocate(4096)
        for descriptor in 0..<size { free[descriptor] = UInt16(size - 1 - descriptor) }
        freeCount = size
    }

    var descriptorTableAddress: UInt64 { page + UInt64(Self.descriptorTableOffset) }
    var availableRingAddress: UInt64 { page + UInt64(Self.availableRingOffset) }
    var usedRingAddress: UInt64 { page + UInt64(Self.usedRingOffset) }

    /// Writes descriptor `slot` of the table at `table` for `buffer`, linked to `next` if any.
    private func writeDescriptor(table: UInt64, _ slot: Int, _ buffer: Buffer, next: Int?,
                                 flags extraFlags: UInt16 = 0) {
        let descriptor = MmioBlock(base: table + UInt64(slot * 16))
        descriptor.write32(UInt32(truncatingIfNeeded: buffer.address), at: 0)
        descriptor.write32(UInt32(truncatingIfNeeded: buffer.address >> 32), at: 4)
        descriptor.write32(buffer.length, at: 8)
        var flags = extraFlags | (buffer.deviceWritable ? Self.flagWrite : 0)
        if next != nil { flags |= Self.flagNext }
        descriptor.write16(flags, at: 12)
        descriptor.write16(UInt16(next ?? 0), at: 14)
    }

    /// Makes `chain` available to the device (without notifying it). With `indirect`, the
    /// chain goes into this head's indirect table and the ring holds one INDIRECT descriptor
    /// (needs VIRTIO_F_RING_INDIRECT_DESC). Returns the head, or nil when the ring is full.
    mutating func submit(_ chain: BufferChain, indirect: Bool = false) -> UInt16? {
        let needed = indirect ? 1 : chain.count
        guard chain.count > 0, needed <= freeCount else { return nil }
        var descriptors = InlineArray<4, Int>(repeating: 0)
        for i in 0..<needed {
            freeCount -= 1
            descriptors[i] = Int(free[freeCount])
        }
        let head = descriptors[0]
        if indirect {
            let table = page + UInt64(Self.indirectTablesOffset + head * Self.maxChain * 16)
            for i in 0..<chain.count {
                writeDescriptor(table: table, i, chain.buffers[i], next: i + 1 < chain.count ? i + 1 : nil)
            }
            let tableBuffer = Buffer(address: table, length: UInt32(chain.count * 16), deviceWritable: false)
            writeDescriptor(table: descriptorTableAddress, head, tableBuffer, next: nil, flags: Self.flagIndirect)
        } else {
            for i in 0..<chain.count {
                writeDescriptor(table: descriptorTableAddress, descriptors[i], chain.buffers[i],
                                next: i + 1 < chain.count ? descriptors[i + 1] : nil)
            }
        }
        // avail.ring[idx % size] = head; then, ordered after it, avail.idx += 1.
        let slot = Int(nextAvailable) % size
        memory.write16(UInt16(head), at: Self.availableRingOffset + 4 + slot * 2)
        compiler_barrier()
        nextAvailable &+= 1
        memory.write16(nextAvailable, at: Self.availableRingOffset + 2)
        return UInt16(head)
    }

    /// Tells the device the available ring has new entries: the queue's index written to its
    /// notification address (an ioeventfd in ActorVMM, so it never reaches user space).
    /// Always notifying is allowed; no suppression (used.flags, avail_event) is honoured.
    func notify() {
        memory_barrier()  // avail.idx is globally visible before the doorbell
        mmio_write16(notifyAddress, index)
    }

    /// The next buffer the device has returned, if any; its descriptors become free again.
    mutating func takeUsed() -> UsedBuffer? {
        let usedIndex = memory.read16(at: Self.usedRingOffset + 2)
        guard usedIndex != lastUsed else { return nil }
        compiler_barrier()  // read the element only after seeing the index that covers it
        let slot = Int(lastUsed) % size
        let id = memory.read32(at: Self.usedRingOffset + 4 + slot * 8)
        let length = memory.read32(at: Self.usedRingOffset + 4 + slot * 8 + 4)
        lastUsed &+= 1
        // With VIRTIO_F_EVENT_IDX: "interrupt me when the used index passes lastUsed".
        // Harmless without it (the device ignores the field then).
        memory.write16(lastUsed, at: Self.availableRingOffset + 4 + size * 2)
        if id < UInt32(size) && isInFlight(Int(id)) {
            release(Int(id))
        } else {
            badUsedIDs += 1
        }
        return UsedBuffer(head: UInt16(truncatingIfNeeded: id), length: length)
    }

    /// Waits for the next used buffer: takes it if it is there, else waits for this queue's
    /// interrupt and looks again, up to `timeout` TSC cycles. A buffer found only after the
    /// interrupt failed to come is returned but counted in `missedInterrupts`.
    mutating func waitForUsed(timeout: UInt64 = Interrupts.defaultTimeout) -> UsedBuffer? {
        let deadline = CPU.timestamp() &+ timeout
        while true {
            // Read the counter before looking at the ring: a completion after the look
            // raises an interrupt after it, so the wait below cannot miss it.
            let seen = Interrupts.count(of: vector)
            if let used = takeUsed() { return used }
            if !Interrupts.wait(for: vector, changingFrom: seen, until: deadline) {
                guard let used = takeUsed() else { return nil }
                missedInterrupts += 1
                return used
            }
        }
    }

    /// How many interrupts this queue's vector has raised since the queue was set up.
    var interrupts: UInt32 { Interrupts.count(of: vector) &- interruptsBefore }

    /// Whether the queue's MSI-X interrupt has come at least once, waiting for it up to `timeout`.
    /// A check calls this after its requests: `waitForUsed` does not wait when a completion is
    /// already there, and with interrupts off (as outside waits) its MSI stays pending in the
    /// LAPIC until the next `sti`, which this provides.
    func receivedInterrupt(timeout: UInt64 = Interrupts.defaultTimeout) -> Bool {
        let seen = Interrupts.count(of: vector)
        if seen != interruptsBefore { return true }
        return Interrupts.wait(for: vector, changingFrom: seen, until: CPU.timestamp() &+ timeout)
    }

    /// Whether descriptor `head` is in use (not on the free stack).
    private func isInFlight(_ head: Int) -> Bool {
        for i in 0..<freeCount where Int(free[i]) == head { return false }
        return true
    }

    /// Puts the chain starting at `head` back on the free stack, following the NEXT links we
    /// wrote (the device does not write descriptors).
    private mutating func release(_ head: Int) {
        var descriptor = head
        while freeCount < size {
            free[freeCount] = UInt16(descriptor)
            freeCount += 1
            let flags = memory.read16(at: Self.descriptorTableOffset + descriptor * 16 + 12)
            guard flags & Self.flagNext != 0, flags & Self.flagIndirect == 0 else { return }
            descriptor = Int(memory.read16(at: Self.descriptorTableOffset + descriptor * 16 + 14))
        }
    }
}
