// BenchVirtio.swift: `bench-notify`, `bench-ipi` and `bench-blk`, the guest side of
// actor-vmm-bench's rows 2 (notify path, and its KVM-only floor) and 3 (virtio-blk service time).
//
// Command-line parameters (all optional):
//   bench_n=N        measured doorbells (default 1000)
//   bench_warmup=W   untimed doorbells before them (default 100)
//   bench_buf=ADDR   guest-physical address where the guest's view of each measured doorbell is
//                    stored: N pairs of little-endian u64s, the TSC just before the doorbell write
//                    and the TSC at the first instruction of the queue's interrupt handler
//                    (bench.S); absolute, so the host can line them up with its own timestamps
//   bench_qd=D       bench-blk: requests per doorbell, 1 or 32 (any power of 2 up to 32; default 1)
//   bench_op=OP      bench-blk: `read` (default) or `write`
//
// The contract with the benchmark: after the device is set up, exactly W + N doorbells, each for
// D requests (bench-notify: D = 1), each waited for by its interrupt before the next, and nothing
// else on that queue. The host finds them in the device's event recording (doorbell, D
// completions, interrupt) and keeps the last N.
//
// Every instruction inside the timed window is expensive on a host whose ring-0 guest code is
// emulated, so the rings are laid out once (BenchRing): posting D requests is one store to the
// available index, then bench_doorbell_and_wait (bench.S). Checks run outside the window.
// Detail: `n=N warmup=W min=<cycles> mean=<cycles>` (+ `qd=D op=read|write` for bench-blk).

/// The parameters above.
struct BenchParameters {
    var count: UInt64 = 1000
    var warmup: UInt64 = 100
    var buffer: UnsafeMutablePointer<UInt64>?
    var depth = 1
    var write = false

    init(_ line: UnsafeBufferPointer<UInt8>) {
        if let n = line.commandLineValue(of: "bench_n").flatMap({ $0.parsedUnsigned() }) { count = n }
        if let w = line.commandLineValue(of: "bench_warmup").flatMap({ $0.parsedUnsigned() }) { warmup = w }
        buffer = line.commandLineValue(of: "bench_buf").flatMap { $0.parsedUnsigned() }
            .flatMap { UnsafeMutablePointer<UInt64>(bitPattern: UInt($0)) }
        if let d = line.commandLineValue(of: "bench_qd").flatMap({ $0.parsedUnsigned() }) { depth = Int(min(d, 1 << 20)) }
        write = line.commandLineValue(of: "bench_op")?.equals("write") ?? false
    }
}

/// A split virtqueue laid out once: `slots` requests with fixed chains of `chain` descriptors each
/// (slot s owns descriptors s·chain ..< (s+1)·chain), and an available ring whose entry j names
/// slot j % slots, written once. Making D more requests available is then one store to
/// `avail.idx`; the device sees ordinary requests. `slots` is a power of 2.
///
///     0                descriptor table   size × 16 bytes
///     size·16          available ring     flags, idx, ring[size], used_event
///     (4-aligned)      used ring          flags, idx, ring[size] × 8, avail_event
struct BenchRing {
    let size: Int
    let slots: Int
    let chain: Int
    let queueIndex: UInt16
    let page: UInt64
    let availableOffset: Int
    let usedOffset: Int
    let notifyAddress: UInt64
    let vector: UInt8
    private(set) var published: UInt16 = 0

    init(_ device: VirtioPciDevice, queue: UInt16, slots: Int, chain: Int) throws(DriverError) {
        var size = 1
        while size < slots * chain { size *= 2 }
        self.size = size
        self.slots = slots
        self.chain = chain
        queueIndex = queue
        availableOffset = size * 16
        usedOffset = (availableOffset + 6 + 2 * size + 3) & ~3
        page = DmaMemory.allocate(usedOffset + 6 + 8 * size)
        let available = MmioBlock(base: page + UInt64(availableOffset))
        for entry in 0..<size {
            available.write16(UInt16((entry % slots) * chain), at: 4 + 2 * entry)
        }
        let queue = try device.setUpQueue(queue, size: size, descriptors: page,
                                          available: page + UInt64(availableOffset),
                                          used: page + UInt64(usedOffset))
        notifyAddress = queue.notifyAddress
        vector = queue.vector
    }

    /// Descriptor `part` of slot `slot`'s chain: `length` bytes at `address`, linked to the next
    /// part unless it is the last.
    func setDescriptor(slot: Int, part: Int, address: UInt64, length: Int, writable: Bool) {
        let index = slot * chain + part
        let descriptor = MmioBlock(base: page + UInt64(index * 16))
        descriptor.write32(UInt32(truncatingIfNeeded: address), at: 0)
        descriptor.write32(UInt32(truncatingIfNeeded: address >> 32), at: 4)
        descriptor.write32(UInt32(length), at: 8)
        let last = part == chain - 1
        descriptor.write16((last ? 0 : Virtqueue.flagNext) | (writable ? Virtqueue.flagWrite : 0), at: 12)
        descriptor.write16(last ? 0 : UInt16(index + 1), at: 14)
    }

    /// The device's used index.
    var usedIndex: UInt16 { mmio_read16(page + UInt64(usedOffset + 2)) }

    /// Runs `warmup + count` doorbells of `depth` requests each: publish, doorbell, wait for the
    /// interrupt (bench.S), EOI, check the used index, then `check(doorbell)` for the caller's own
    /// checks (outside the timed window). Stores the measured doorbells' cycles in `buffer` and
    /// writes `n= warmup= min= mean=` to `detail`. Throws on the first bad completion.
    mutating func run(depth: Int, _ parameters: BenchParameters, _ detail: inout LineBuffer,
                      check: (Int) throws(DriverError) -> Void) throws(DriverError) {
        try timedInterrupts(vector: vector, parameters, &detail) { doorbell throws(DriverError) in
            published &+= UInt16(depth)
            mmio_write16(page + UInt64(availableOffset + 2), published)
            memory_barrier()  // avail.idx is globally visible before the doorbell
            let start = bench_doorbell_and_wait(notifyAddress, queueIndex)
            Lapic.endOfInterrupt()
            // A device may complete the requests in several batches, one interrupt each (virtio-blk
            // through io_uring: what the kernel finished at once, then the rest): wait for all.
            var interrupts = 1
            while usedIndex != published && interrupts < depth {
                _ = bench_wait_again()
                Lapic.endOfInterrupt()
                interrupts += 1
            }
            let end = bench_irq_tsc_value()
            guard usedIndex == published else { throw DriverError("used-idx", usedIndex) }
            try check(doorbell)
            return (start, end)
        }
    }
}

/// Runs `warmup + count` timed interrupts with `bench_irq_stub` on `vector`'s gate: `once(i)` triggers
/// one and returns the guest TSC before the trigger and at the handler. Stores the measured ones in
/// the sample buffer and writes `n= warmup= min= mean=` to `detail`.
func timedInterrupts(vector: UInt8, _ parameters: BenchParameters, _ detail: inout LineBuffer,
                     _ once: (Int) throws(DriverError) -> (UInt64, UInt64)) throws(DriverError) {
    Interrupts.setGate(vector, handler: bench_irq_stub_address())
    defer { Interrupts.setGate(vector, handler: interrupt_stub_address(vector)) }
    var sum: UInt64 = 0
    var minimum = UInt64.max
    for index in 0..<Int(parameters.warmup + parameters.count) {
        let (start, end) = try once(index)
        let measured = index - Int(parameters.warmup)
        if measured >= 0 {
            sum &+= end &- start
            minimum = min(minimum, end &- start)
            if let buffer = parameters.buffer {
                buffer[2 * measured] = start
                buffer[2 * measured + 1] = end
            }
        }
    }
    detail.write("n=")
    detail.write(decimal: parameters.count)
    detail.write(" warmup=")
    detail.write(decimal: parameters.warmup)
    if parameters.count > 0 {
        detail.write(" min=")
        detail.write(decimal: minimum)
        detail.write(" mean=")
        detail.write(decimal: sum / parameters.count)
    }
}

/// `bench-ipi`: row 2's KVM floor: the same timed window as `bench-notify` with a self-IPI (the
/// local APIC's ICR, in KVM) instead of a doorbell: an MMIO write KVM handles in the kernel and an
/// interrupt it injects, with no VMM thread involved.
func benchSelfIpiTest(_ context: inout TestContext) -> Bool {
    let parameters = BenchParameters(context.boot.commandLine)
    let vector = Interrupts.benchVector
    // ICR low: destination shorthand 01 (self), fixed delivery, edge, the vector.
    let command = UInt32(1) << 18 | UInt32(vector)
    do {
        try timedInterrupts(vector: vector, parameters, &context.detail) { _ throws(DriverError) in
            let start = bench_self_ipi_and_wait(Lapic.base + UInt64(Lapic.interruptCommandLow), command)
            let end = bench_irq_tsc_value()
            Lapic.endOfInterrupt()
            return (start, end)
        }
    } catch {
        context.detail.write(error)
        return false
    }
    return true
}

/// `bench-notify`: one-byte requests to the first entropy device (actor-vmm-bench gives it a null
/// backend), one per doorbell: the notify path doorbell → ioeventfd → loop → device → irqfd → IRQ.
func benchNotifyTest(_ context: inout TestContext) -> Bool {
    let parameters = BenchParameters(context.boot.commandLine)
    let ok = withVirtioDevice(VirtioID.entropy, &context.detail) { device, detail throws(DriverError) in
        try device.start(wanted: 0)  // no EVENT_IDX: one interrupt per completion
        var ring = try BenchRing(device, queue: 0, slots: 1, chain: 1)
        ring.setDescriptor(slot: 0, part: 0, address: DmaMemory.allocate(64, alignment: 64), length: 1, writable: true)
        try device.setDriverOK()
        try ring.run(depth: 1, parameters, &detail) { _ throws(DriverError) in }
        return true
    }
    guard let ok else {
        context.detail.write("no virtio-rng device")
        return false
    }
    return ok
}

/// What `bench-blk` puts on the disk: 4 KiB block s (s < 32) holds the byte s + 1 throughout. The
/// benchmark fills its scratch image the same way, so reads can be checked and writes leave the
/// image as it was (the host checks it afterwards).
enum BenchBlk {
    static let slots = 32
    static func pattern(_ slot: Int) -> UInt64 { 0x0101_0101_0101_0101 &* UInt64(slot + 1) }
}

/// `bench-blk`: 4 KiB reads or writes on the first virtio-blk disk, `bench_qd` per doorbell; slot s
/// always addresses block s (sector 8s), requests go round the 32 slots.
func benchBlkTest(_ context: inout TestContext) -> Bool {
    let parameters = BenchParameters(context.boot.commandLine)
    let depth = parameters.depth, slots = BenchBlk.slots
    guard depth >= 1, depth <= slots, depth & (depth - 1) == 0 else {
        context.detail.write("bench_qd=")
        context.detail.write(decimal: depth)
        context.detail.write(" (1, 2, 4, ... 32)")
        return false
    }
    let ok = withVirtioDevice(VirtioID.block, &context.detail) { device, detail throws(DriverError) in
        try device.start(wanted: 0)
        let capacity = UInt64(device.deviceConfig.read32(at: VirtioBlk.configCapacity))
            | UInt64(device.deviceConfig.read32(at: VirtioBlk.configCapacity + 4)) << 32
        guard capacity >= UInt64(slots * 8) else { throw DriverError("capacity", capacity) }
        var ring = try BenchRing(device, queue: 0, slots: slots, chain: 3)
        let headers = DmaMemory.allocate(slots * 16, alignment: 64)
        let statuses = DmaMemory.allocate(slots, alignment: 64)
        let okStatuses = DmaMemory.allocate(slots, alignment: 64)  // zeroes: VIRTIO_BLK_S_OK
        let expected = DmaMemory.allocate(4096)
        let data = DmaMemory.allocate(slots * 4096)
        for slot in 0..<slots {
            let header = MmioBlock(base: headers + UInt64(slot * 16))
            header.write32(parameters.write ? VirtioBlk.typeOut : VirtioBlk.typeIn, at: 0)
            header.write32(UInt32(slot * 8), at: 8)  // sector; reserved and the high half stay 0
            ring.setDescriptor(slot: slot, part: 0, address: headers + UInt64(slot * 16), length: 16, writable: false)
            ring.setDescriptor(slot: slot, part: 1, address: data + UInt64(slot * 4096), length: 4096,
                               writable: !parameters.write)
            ring.setDescriptor(slot: slot, part: 2, address: statuses + UInt64(slot), length: 1, writable: true)
            // Writes carry the pattern; read buffers are poisoned, so stale data cannot pass.
            memory_fill64(data + UInt64(slot * 4096), parameters.write ? BenchBlk.pattern(slot) : 0x5A5A_5A5A_5A5A_5A5A, 512)
        }
        memory_fill64(statuses, ~0, UInt64(slots / 8))
        try device.setDriverOK()

        try ring.run(depth: depth, parameters, &detail) { doorbell throws(DriverError) in
            let first = (doorbell * depth) % slots
            // Status bytes of this doorbell's slots: all OK, then back to 0xFF for their next use.
            if depth >= 8 {
                guard memory_equal64(statuses + UInt64(first), okStatuses, UInt64(depth / 8)) else {
                    throw DriverError("status-slots-from", first)
                }
                memory_fill64(statuses + UInt64(first), ~0, UInt64(depth / 8))
            } else {
                for slot in first..<(first + depth) where mmio_read8(statuses + UInt64(slot)) != VirtioBlk.statusOK {
                    throw DriverError("status-slot", slot)
                }
                for slot in first..<(first + depth) { mmio_write8(statuses + UInt64(slot), 0xFF) }
            }
            // The first read of every slot returned the disk's pattern (checked once: it is slow here).
            if !parameters.write && doorbell * depth < slots {
                for slot in first..<(first + depth) {
                    memory_fill64(expected, BenchBlk.pattern(slot), 512)
                    guard memory_equal64(data + UInt64(slot * 4096), expected, 512) else {
                        throw DriverError("read-mismatch-slot", slot)
                    }
                }
            }
        }
        detail.write(" qd=")
        detail.write(decimal: depth)
        detail.write(parameters.write ? " op=write" : " op=read")
        return true
    }
    guard let ok else {
        context.detail.write("no virtio-blk device")
        return false
    }
    return ok
}
