import ActorVmm
import EpollLoop
import Glibc

/// Host iovecs, grown to the longest request seen and reused (freed with ``release()``).
struct IovecStorage {
    private(set) var base: UnsafeMutablePointer<iovec>?
    private(set) var capacity = 0

    /// Makes room for `count` iovecs (at least 4); keeps nothing of what was there.
    mutating func reserve(_ count: Int) {
        guard count > capacity || base == nil else { return }
        base?.deallocate()
        capacity = max(count, 4)
        base = .allocate(capacity: capacity)
    }

    mutating func release() {
        base?.deallocate()
        base = nil
        capacity = 0
    }
}

/// A page-aligned buffer for `direct` transfers, grown as needed and reused.
struct BounceBuffer {
    private var base: UnsafeMutableRawPointer?
    private var size = 0

    /// The buffer with room for `bytes`, or nil if it cannot be allocated.
    mutating func reserve(_ bytes: Int) -> UnsafeMutableRawPointer? {
        if bytes <= size, let base { return base }
        free(base)
        base = nil
        size = 0
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 4096, bytes) == 0, let raw else { return nil }
        base = raw
        size = bytes
        return raw
    }

    mutating func release() {
        free(base)
        base = nil
        size = 0
    }
}

/// The requests on the ring: one slot per request the device's queues can hold (num_queues × queue_size),
/// each with the iovecs the kernel reads while the request is in flight. A slot's index is its SQE's tag.
struct BlockInFlight {
    struct Slot {
        var head: UInt16 = 0
        var queue = 0
        var status = GuestAddress(0)
        var write = false
        var flush = false
        var bytes = 0
        var offset: UInt64 = 0
        var iovecCount = 0
        var iovecs = IovecStorage()

        /// Fills in a request going on the ring (one mutation of the slot; its iovec storage stays).
        mutating func start(head: UInt16, queue: Int, status: GuestAddress, write: Bool, flush: Bool, bytes: Int,
                            offset: UInt64, iovecCount: Int) {
            self.head = head; self.queue = queue; self.status = status; self.write = write; self.flush = flush
            self.bytes = bytes; self.offset = offset; self.iovecCount = iovecCount
        }
    }

    var slots: [Slot]
    private var free: [Int]
    /// Requests on the ring (submitted or queued), not yet reaped; of them, writes.
    private(set) var count = 0
    private(set) var writes = 0

    init(slots: Int) {
        self.slots = Array(repeating: Slot(), count: slots)
        free = Array((0..<slots).reversed())
    }

    /// A free slot, or nil when every slot is in flight (a driver that posted a head twice).
    mutating func acquire() -> Int? {
        guard let slot = free.popLast() else { return nil }
        count += 1
        return slot
    }

    /// Fills in `slot` for a request going on the ring (``Slot/start``), counting writes.
    mutating func start(_ slot: Int, head: UInt16, queue: Int, status: GuestAddress, write: Bool, flush: Bool, bytes: Int,
                        offset: UInt64, iovecCount: Int) {
        slots[slot].start(head: head, queue: queue, status: status, write: write, flush: flush, bytes: bytes,
                          offset: offset, iovecCount: iovecCount)
        if write { writes += 1 }
    }

    mutating func release(_ slot: Int) {
        if slots[slot].write { writes -= 1 }
        slots[slot].write = false
        free.append(slot)
        count -= 1
    }

    mutating func releaseStorage() {
        for index in slots.indices { slots[index].iovecs.release() }
    }
}

/// The io_uring path: queueing, submitting, reaping, and waiting for what is in flight.
extension VirtioBlock {
    /// Puts a read or write on the ring (not yet submitted); false if the ring is full even after a submit.
    func queueTransfer(slot: Int, write: Bool, iovecs: (count: Int, bytes: Int), sector: UInt64, head: UInt16, queue: Int,
                       status: GuestAddress) -> Bool {
        guard let ring, let base = inFlight.slots[slot].iovecs.base else { return false }
        if options.direct {
            // O_DIRECT wants sector-aligned memory: anything else goes through the bounce buffer (sync).
            for index in 0..<iovecs.count where (Int(bitPattern: base[index].iov_base) | base[index].iov_len) & 511 != 0 {
                return false
            }
        }
        inFlight.start(slot, head: head, queue: queue, status: status, write: write, flush: false,
                       bytes: iovecs.bytes, offset: sector * Self.sectorSize, iovecCount: iovecs.count)
        let offset = sector * Self.sectorSize, tag = UInt64(slot)
        if ring.queueTransfer(write: write, iovecs: base, count: iovecs.count, offset: offset, tag: tag) { return true }
        ring.submit()
        return ring.queueTransfer(write: write, iovecs: base, count: iovecs.count, offset: offset, tag: tag)
    }

    /// Puts a FLUSH on the ring: an fdatasync that starts once every request submitted before it is done.
    func queueFlush(slot: Int, head: UInt16, queue: Int, status: GuestAddress) -> Bool {
        guard let ring else { return false }
        inFlight.start(slot, head: head, queue: queue, status: status, write: false, flush: true,
                       bytes: 0, offset: 0, iovecCount: 0)
        if ring.queueFlushAfterAll(tag: UInt64(slot)) { return true }
        ring.submit()
        return ring.queueFlushAfterAll(tag: UInt64(slot))
    }

    /// Submits the doorbell's batch with one `io_uring_enter` and completes what finished meanwhile.
    func submitAndReap(device: isolated VirtioPciDevice) {
        guard let ring, inFlight.count > 0 else { return }
        if let error = ring.submit() {
            // The SQEs stay queued (e.g. EAGAIN, EBUSY): the next submit or wait hands them to the kernel.
            Log.warning("\(device.name): io_uring_enter failed: \(error)")
        }
        reapCompletions(device: device)
    }

    /// Completes every request the kernel has finished; one interrupt decision per queue touched (none with
    /// `interrupt` false: the interrupts stay owed, for ``VirtioPciDevice/resume()`` to send).
    func reapCompletions(device: isolated VirtioPciDevice, interrupt: Bool = true) {
        guard let ring else { return }
        var touched: UInt64 = 0
        while let (tag, result) = ring.reap() {
            let slot = Int(tag)
            guard slot < inFlight.slots.count else { continue }
            let request = inFlight.slots[slot]
            var status = Self.statusOK, written = 0
            if request.flush {
                status = result == 0 ? Self.statusOK : Self.statusIOErr
            } else if result < 0 {
                status = Self.statusIOErr
            } else if Int(result) < request.bytes, let base = request.iovecs.base {
                // A short transfer (rare on a regular file): the rest synchronously, or IOERR at end of file.
                let ok = transfer(base, count: request.iovecCount, bytes: request.bytes, at: request.offset,
                                  write: request.write, done: Int(result))
                status = ok ? Self.statusOK : Self.statusIOErr
            }
            if status == Self.statusOK && !request.write && !request.flush { written = request.bytes }
            inFlight.release(slot)
            if device.canDMA {
                finish(head: request.head, queue: request.queue, status: status, statusAddress: request.status,
                       dataWritten: written, device: device)
                touched |= 1 << UInt64(request.queue)
            } else {
                device.countError()  // bus mastering went off meanwhile: the device must not write guest memory
            }
        }
        var queues = interrupt ? touched : 0
        while queues != 0 {
            let queue = queues.trailingZeroBitCount
            queues &= queues - 1
            device.interruptIfNeeded(queue: queue)
        }
    }

    /// Waits until the kernel is done with every request on the ring and drops their completions (reset,
    /// stop, deinit: the driver no longer expects them, and guest memory must be left alone afterwards).
    func waitForInFlight() {
        guard let ring else { return }
        while inFlight.count > 0 {
            while let (tag, _) = ring.reap() {
                if Int(tag) < inFlight.slots.count { inFlight.release(Int(tag)) }
            }
            guard inFlight.count > 0 else { break }
            if let error = ring.submit(wait: 1) {
                Log.warning("io_uring: cannot wait for \(inFlight.count) requests in flight: \(error)")
                return
            }
        }
    }
}
