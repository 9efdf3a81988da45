// TestsVirtio.swift: `blk`, `rng`, `console`, `net`: each drives its virtio device like an OS
// driver would (VirtioPci.swift, Virtqueue.swift) and checks what comes back.
//
// Every request is: buffers in DMA memory, a descriptor chain, the available ring, a doorbell,
// then the queue's MSI-X interrupt and the used ring. A check also fails when a queue's
// interrupt never came (`no-msix-interrupt-queue`, `msix-missed`). Failures are reported as
// `what=0xvalue` (DriverError), plus `needs-reset` if the device set DEVICE_NEEDS_RESET.
// Devices are reset when their check is done.

/// Runs `body` on the `index`-th virtio device of type `virtioID` (capabilities read, DMA
/// memory free); `body` negotiates features and sets up queues. A driver error goes to the
/// detail line and fails the check; the device is reset afterwards. Returns nil when there is
/// no such device.
func withVirtioDevice(_ virtioID: UInt16, index: Int = 0, _ detail: inout LineBuffer,
                      _ body: (inout VirtioPciDevice, inout LineBuffer) throws(DriverError) -> Bool) -> Bool? {
    guard let pci = VirtioPciDevice.find(virtioID: virtioID, index: index) else { return nil }
    DmaMemory.reset()
    var device: VirtioPciDevice
    do {
        device = try VirtioPciDevice(pci)
    } catch {
        detail.write(error)
        return false
    }
    defer { device.reset() }
    do {
        return try body(&device, &detail)
    } catch {
        if detail.count > 0 { detail.write(" ") }
        detail.write(error)
        if device.needsReset { detail.write(" needs-reset") }
        return false
    }
}

/// Submits `chain` to `queue`, notifies, and waits for it to come back. Throws on a full ring,
/// a timeout, or when a different request completes.
func performRequest(_ queue: inout Virtqueue, _ chain: BufferChain) throws(DriverError) -> UsedBuffer {
    guard let head = queue.submit(chain) else { throw DriverError("ring-full", queue.index) }
    queue.notify()
    guard let used = queue.waitForUsed() else { throw DriverError("timeout-queue", queue.index) }
    guard used.head == head else { throw DriverError("used-id", used.head) }
    return used
}

/// Checks `queue`'s interrupts: its MSI-X vector fired at least once, and no completion had to
/// be found without one (`msix-missed`); the device returned only heads we had made available.
func checkInterrupts(_ queue: Virtqueue) throws(DriverError) {
    guard queue.badUsedIDs == 0 else { throw DriverError("bad-used-ids", queue.badUsedIDs) }
    guard queue.missedInterrupts == 0 else { throw DriverError("msix-missed", queue.missedInterrupts) }
    guard queue.receivedInterrupt() else { throw DriverError("no-msix-interrupt-queue", queue.index) }
}

extension DmaMemory {
    /// Copies `text` to guest-physical `address`; returns its length.
    static func copy(_ text: StaticString, to address: UInt64) -> Int {
        let bytes = bytesAt(address, text.utf8CodeUnitCount)
        text.withUTF8Buffer { source in
            for i in source.indices { bytes[i] = source[i] }
        }
        return text.utf8CodeUnitCount
    }
}

// MARK: - blk

enum VirtioBlk {
    // Feature bits (§5.2.3).
    static let featureSegMax: UInt64 = 1 << 2
    static let featureReadOnly: UInt64 = 1 << 5
    static let featureBlockSize: UInt64 = 1 << 6
    static let featureFlush: UInt64 = 1 << 9
    // Configuration: capacity (u64, in 512-byte sectors) at 0.
    static let configCapacity = 0
    // Request types and status values (§5.2.6).
    static let typeIn: UInt32 = 0
    static let typeOut: UInt32 = 1
    static let typeFlush: UInt32 = 4
    static let typeGetID: UInt32 = 8
    static let statusOK: UInt8 = 0
    static let statusIOError: UInt8 = 1
    static let statusUnsupported: UInt8 = 2

    static let sectorSize = 512
    static let slots = 4              // requests in flight at once
    static let sectorsPerRequest = 8  // 4 KiB each

    /// The test pattern: the byte at disk offset `o`.
    static func pattern(_ offset: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: (offset >> 9) ^ offset ^ 0xA5)
    }
}

/// The pattern for the whole disk, in 128 KiB. Byte j of sector s is (s ^ 0xA5 ^ j) & 0xFF, so
/// sector s + 256 holds the same bytes as sector s: 256 sectors computed once serve any disk.
/// Write requests point their data descriptor straight into this table; reads are compared
/// with it by `repe cmpsq` (see Hardware.h for why the guest avoids byte loops).
struct PatternTable {
    static let sectors: UInt64 = 256
    let address: UInt64

    init() throws(DriverError) {
        address = DmaMemory.allocate(Int(Self.sectors) * VirtioBlk.sectorSize)
        let words = UnsafeMutablePointer<UInt64>(bitPattern: UInt(address))!
        for sector in 0..<Int(Self.sectors) {
            // Bytes 8w...8w+7 of a sector, before the XOR: 8(w mod 32) + 0...7, little-endian.
            let k = UInt64((sector ^ 0xA5) & 0xFF) &* 0x0101_0101_0101_0101
            for w in 0..<64 {
                words[sector * 64 + w] = (0x0706_0504_0302_0100 &+ UInt64(w & 31) &* 0x0808_0808_0808_0808) ^ k
            }
        }
        // Spot-check the word trick against the definition.
        for offset: UInt64 in [0, 1, 511, 512, 3 * 512 + 100, 255 * 512 + 511] {
            guard mmio_read8(address + offset) == VirtioBlk.pattern(offset) else {
                throw DriverError("pattern-table-bug-at", offset)
            }
        }
    }

    /// Where the bytes of disk sector `sector` are in the table.
    func address(ofSector sector: UInt64) -> UInt64 {
        address + (sector % Self.sectors) * UInt64(VirtioBlk.sectorSize)
    }
}

/// What one disk's check found (for the summary line).
struct DiskResult {
    var readOnly = false
    var sectors: UInt64 = 0
    var flushed = false
    var outOfRangeIOError = false
    var usedIndirect = false
    var interrupts: UInt32 = 0
}

/// A virtio-blk request queue with `VirtioBlk.slots` request slots, each with its own header
/// (16 bytes: type u32, reserved u32, sector u64), status byte and 4 KiB data buffer.
struct BlockQueue {
    var queue: Virtqueue
    let indirect: Bool
    let headers: UInt64   // slot i: header at + 32 i, status at + 32 i + 16
    let buffers: UInt64   // slot i: + 4096 i
    private(set) var usedIndirect = false

    init(queue: Virtqueue, indirect: Bool) {
        self.queue = queue
        self.indirect = indirect
        headers = DmaMemory.allocate(VirtioBlk.slots * 32, alignment: 64)
        buffers = DmaMemory.allocate(VirtioBlk.slots * 4096)
    }

    func buffer(_ slot: Int) -> UInt64 { buffers + UInt64(slot * 4096) }
    func status(_ slot: Int) -> UInt8 { mmio_read8(headers + UInt64(slot * 32 + 16)) }

    /// Fills slot `slot`'s header and makes the request available (no doorbell): header,
    /// `length` bytes of data at `data` (device-writable for reads), status. Slot 0 goes
    /// through an indirect table when the device offers them.
    mutating func submit(_ slot: Int, type: UInt32, sector: UInt64, data: UInt64, length: Int,
                         dataWritable: Bool) throws(DriverError) -> UInt16 {
        let header = MmioBlock(base: headers + UInt64(slot * 32))
        header.write32(type, at: 0)
        header.write32(0, at: 4)
        header.write32(UInt32(truncatingIfNeeded: sector), at: 8)
        header.write32(UInt32(truncatingIfNeeded: sector >> 32), at: 12)
        header.write8(0xFF, at: 16)  // not a status value: shows whether the device wrote one
        var chain = BufferChain()
        chain.readable(headers + UInt64(slot * 32), 16)
        if length > 0 {
            if dataWritable { chain.writable(data, length) } else { chain.readable(data, length) }
        }
        chain.writable(headers + UInt64(slot * 32 + 16), 1)
        let viaIndirect = indirect && slot == 0
        guard let head = queue.submit(chain, indirect: viaIndirect) else { throw DriverError("ring-full") }
        if viaIndirect { usedIndirect = true }
        return head
    }

    /// One request in slot 0 with slot 0's buffer, waited for; returns its status and used length.
    mutating func perform(type: UInt32, sector: UInt64, length: Int, dataWritable: Bool = true)
        throws(DriverError) -> (status: UInt8, length: UInt32) {
        let head = try submit(0, type: type, sector: sector, data: buffer(0), length: length,
                              dataWritable: dataWritable)
        queue.notify()
        guard let used = queue.waitForUsed() else { throw DriverError("timeout-request-type", type) }
        guard used.head == head else { throw DriverError("used-id", used.head) }
        return (status(0), used.length)
    }

    /// Writes the pattern over the whole disk (or reads it back and compares), `slots` requests
    /// of 4 KiB in flight at a time, one doorbell per batch.
    mutating func transferWholeDisk(capacity: UInt64, write: Bool, pattern: PatternTable) throws(DriverError) {
        var sector: UInt64 = 0
        while sector < capacity {
            var heads = InlineArray<4, Int>(repeating: -1)
            var firstSector = InlineArray<4, UInt64>(repeating: 0)
            var sectors = InlineArray<4, Int>(repeating: 0)
            var batch = 0
            while batch < VirtioBlk.slots && sector < capacity {
                // Requests start at multiples of 8 sectors: never across the table's end.
                let count = Int(min(UInt64(VirtioBlk.sectorsPerRequest), capacity - sector))
                let bytes = count * VirtioBlk.sectorSize
                let data: UInt64
                if write {
                    data = pattern.address(ofSector: sector)
                } else {
                    // Poison the buffer, so that stale data cannot pass for the device's.
                    data = buffer(batch)
                    memory_fill64(data, 0x5A5A_5A5A_5A5A_5A5A, UInt64(bytes / 8))
                }
                heads[batch] = Int(try submit(batch, type: write ? VirtioBlk.typeOut : VirtioBlk.typeIn,
                                              sector: sector, data: data, length: bytes, dataWritable: !write))
                firstSector[batch] = sector
                sectors[batch] = count
                sector += UInt64(count)
                batch += 1
            }
            queue.notify()
            for _ in 0..<batch {
                guard let used = queue.waitForUsed() else {
                    throw write ? DriverError("write-timeout-sector", firstSector[0])
                                : DriverError("read-timeout-sector", firstSector[0])
                }
                var slot = 0
                while slot < batch && heads[slot] != Int(used.head) { slot += 1 }
                guard slot < batch else { throw DriverError("used-id", used.head) }
                heads[slot] = -1
                guard status(slot) == VirtioBlk.statusOK else {
                    throw write ? DriverError("write-status", status(slot)) : DriverError("read-status", status(slot))
                }
                let bytes = sectors[slot] * VirtioBlk.sectorSize
                if write {
                    // len counts what the device wrote (§2.7.8.2): at least the status byte.
                    guard used.length >= 1 else { throw DriverError("write-used-len", used.length) }
                } else {
                    guard used.length == UInt32(bytes + 1) else { throw DriverError("read-used-len", used.length) }
                    let expected = pattern.address(ofSector: firstSector[slot])
                    if !memory_equal64(buffer(slot), expected, UInt64(bytes / 8)) {
                        var offset = 0  // find the first wrong byte (only on failure: slow)
                        while offset < bytes && mmio_read8(buffer(slot) + UInt64(offset))
                            == mmio_read8(expected + UInt64(offset)) { offset += 1 }
                        throw DriverError("read-mismatch-at", firstSector[slot] * UInt64(VirtioBlk.sectorSize) + UInt64(offset))
                    }
                }
            }
        }
    }
}

/// One disk: read-only disks must refuse a write (IOERR) and answer GET_ID and a read;
/// writable ones get the pattern written over the whole disk, FLUSH, read back and verified.
/// Both must fail a read at sector = capacity with IOERR.
func checkDisk(_ device: inout VirtioPciDevice, _ result: inout DiskResult) throws(DriverError) {
    try device.start(wanted: VirtioBlk.featureReadOnly | VirtioBlk.featureFlush | VirtioBlk.featureBlockSize
                     | VirtioBlk.featureSegMax | VirtioFeature.ringIndirectDescriptors)
    var blk = BlockQueue(queue: try device.setUpQueue(0),
                         indirect: device.features & VirtioFeature.ringIndirectDescriptors != 0)
    try device.setDriverOK()
    let capacity = UInt64(device.deviceConfig.read32(at: VirtioBlk.configCapacity))
        | UInt64(device.deviceConfig.read32(at: VirtioBlk.configCapacity + 4)) << 32
    result.sectors = capacity
    result.readOnly = device.features & VirtioBlk.featureReadOnly != 0

    // GET_ID: 20 bytes (device-writable), status OK.
    let id = try blk.perform(type: VirtioBlk.typeGetID, sector: 0, length: 20)
    guard id.status == VirtioBlk.statusOK else { throw DriverError("get-id-status", id.status) }

    if result.readOnly {
        if capacity > 0 {
            let write = try blk.perform(type: VirtioBlk.typeOut, sector: 0, length: 512, dataWritable: false)
            guard write.status == VirtioBlk.statusIOError else { throw DriverError("ro-write-status", write.status) }
            let read = try blk.perform(type: VirtioBlk.typeIn, sector: 0, length: 512)
            guard read.status == VirtioBlk.statusOK else { throw DriverError("ro-read-status", read.status) }
        }
    } else {
        let pattern = try PatternTable()
        try blk.transferWholeDisk(capacity: capacity, write: true, pattern: pattern)
        if device.features & VirtioBlk.featureFlush != 0 {
            let flush = try blk.perform(type: VirtioBlk.typeFlush, sector: 0, length: 0)
            guard flush.status == VirtioBlk.statusOK else { throw DriverError("flush-status", flush.status) }
            result.flushed = true
        }
        try blk.transferWholeDisk(capacity: capacity, write: false, pattern: pattern)
    }

    let outOfRange = try blk.perform(type: VirtioBlk.typeIn, sector: capacity, length: 512)
    guard outOfRange.status == VirtioBlk.statusIOError else { throw DriverError("oob-read-status", outOfRange.status) }
    result.outOfRangeIOError = true
    result.usedIndirect = blk.usedIndirect
    try checkInterrupts(blk.queue)
    result.interrupts = blk.queue.interrupts
}

/// `blk`: every virtio-blk disk, in slot order.
/// Detail: `disks=2 rw_sectors=2048 ro=1 flush=ok oob=ioerr indirect=ok irqs=<n>`.
func blkTest(_ context: inout TestContext) -> Bool {
    var disks = 0
    var passed = 0
    var writableSectors: UInt64 = 0
    var readOnly = 0
    var flushed = 0
    var outOfRange = 0
    var indirect = 0
    var interrupts: UInt32 = 0
    var problems = LineBuffer()
    while true {
        var result = DiskResult()
        let ok = withVirtioDevice(VirtioID.block, index: disks, &problems) { device, _ throws(DriverError) in
            try checkDisk(&device, &result)
            return true
        }
        guard let ok else { break }
        if ok {
            passed += 1
            if result.readOnly { readOnly += 1 } else { writableSectors += result.sectors }
            if result.flushed { flushed += 1 }
            if result.outOfRangeIOError { outOfRange += 1 }
            if result.usedIndirect { indirect += 1 }
            interrupts += result.interrupts
        } else {
            problems.write(" (disk ")
            problems.write(decimal: disks)
            problems.write(") ")
        }
        disks += 1
    }
    guard disks > 0 else {
        context.detail.write("no virtio-blk device")
        return false
    }
    context.detail.write("disks=")
    context.detail.write(decimal: disks)
    context.detail.write(" rw_sectors=")
    context.detail.write(decimal: writableSectors)
    context.detail.write(" ro=")
    context.detail.write(decimal: readOnly)
    context.detail.write(flushed > 0 ? " flush=ok" : " flush=none")
    context.detail.write(outOfRange == passed ? " oob=ioerr" : " oob=bad")
    context.detail.write(indirect > 0 ? " indirect=ok" : " indirect=unused")
    context.detail.write(" irqs=")
    context.detail.write(decimal: interrupts)
    if problems.count > 0 {
        context.detail.write(" error: ")
        problems.write(to: &context.detail)
    }
    return passed == disks
}

// MARK: - rng

/// Reads `buffer`'s 64 bytes from a freshly set-up entropy device; returns the used length.
func readEntropy(_ device: inout VirtioPciDevice, eventIndex: Bool, into buffer: UInt64) throws(DriverError) -> UInt32 {
    try device.start(wanted: eventIndex ? VirtioFeature.ringEventIndex : 0)
    var queue = try device.setUpQueue(0)
    try device.setDriverOK()
    var chain = BufferChain()
    chain.writable(buffer, 64)
    let used = try performRequest(&queue, chain)
    try checkInterrupts(queue)
    return used.length
}

/// `rng`: two 64-byte reads (the second with VIRTIO_F_EVENT_IDX, if offered, after a reset).
/// PASS if both returned 64 bytes, the first is not one repeated byte, and they differ.
/// Detail: `len=64,64 distinct=yes event_idx=on`.
func rngTest(_ context: inout TestContext) -> Bool {
    let ok = withVirtioDevice(VirtioID.entropy, &context.detail) { device, detail throws(DriverError) in
        let first = DmaMemory.allocate(64, alignment: 64)
        let second = DmaMemory.allocate(64, alignment: 64)
        let firstLength = try readEntropy(&device, eventIndex: false, into: first)
        // Again from reset, now with event-index interrupt suppression when the device has it.
        device.reset()
        let secondLength = try readEntropy(&device, eventIndex: true, into: second)
        let usedEventIndex = device.features & VirtioFeature.ringEventIndex != 0

        let a = DmaMemory.bytesAt(first, 64)
        let b = DmaMemory.bytesAt(second, 64)
        let varied = a.contains { $0 != a[0] }
        var identical = true
        for i in 0..<64 where a[i] != b[i] { identical = false }
        detail.write("len=")
        detail.write(decimal: firstLength)
        detail.write(",")
        detail.write(decimal: secondLength)
        detail.write(varied && !identical ? " distinct=yes" : " distinct=no")
        detail.write(usedEventIndex ? " event_idx=on" : " event_idx=off")
        return firstLength == 64 && secondLength == 64 && varied && !identical
    }
    guard let ok else {
        context.detail.write("no virtio-rng device")
        return false
    }
    return ok
}

// MARK: - console

/// `console`: `hello from hvc0\n` through transmitq0 (queue 1); PASS when it comes back on the
/// used ring. The host checks that the text reached the console's output.
/// Detail: `tx=16 irqs=1`.
func consoleTest(_ context: inout TestContext) -> Bool {
    let ok = withVirtioDevice(VirtioID.console, &context.detail) { device, detail throws(DriverError) in
        try device.start(wanted: 0)
        _ = try device.setUpQueue(0)  // receiveq0: set up, but no buffers (no input expected)
        var transmit = try device.setUpQueue(1)
        try device.setDriverOK()
        let text = DmaMemory.allocate(64, alignment: 64)
        let length = DmaMemory.copy("hello from hvc0\n", to: text)
        var chain = BufferChain()
        chain.readable(text, length)
        _ = try performRequest(&transmit, chain)
        detail.write("tx=")
        detail.write(decimal: length)
        try checkInterrupts(transmit)
        detail.write(" irqs=")
        detail.write(decimal: transmit.interrupts)
        return true
    }
    guard let ok else {
        context.detail.write("no virtio-console device")
        return false
    }
    return ok
}

// MARK: - net

enum VirtioNet {
    static let featureMac: UInt64 = 1 << 5
    static let featureStatus: UInt64 = 1 << 16
    static let configMac = 0       // 6 bytes
    static let configStatus = 6    // u16, bit 0: link up
    static let headerSize = 12     // struct virtio_net_hdr with num_buffers (virtio 1.x)
    static let receiveBufferSize = 2048  // ≥ 12 + 1526: any frame fits
    static let receiveBuffers = 8
    static let etherType: UInt16 = 0x88B5  // IEEE local experimental
    static let expectedMac: InlineArray<6, UInt8> = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    /// About 10 s of TSC cycles for the host's frame to arrive (it re-sends every 50 ms).
    static let receiveTimeout: UInt64 = 25_000_000_000
}

/// `net`: MAC from config space (must be 52:54:00:12:34:56, or with `netmac=any` on the command line any
/// locally administered unicast address: a VMM that picks a random one), receive buffers posted, one
/// broadcast frame (ethertype 0x88B5, `ACTORVMM-NET-TX`) sent, then waits for a frame of
/// that ethertype starting `ACTORVMM-NET-RX` (others are counted and put back).
/// Detail: `mac=52:54:00:12:34:56 tx=ok rx=ok link=up frames=<received>`.
func netTest(_ context: inout TestContext) -> Bool {
    let anyLocalMac = context.boot.commandLine.commandLineValue(of: "netmac")?.equals("any") ?? false
    let ok = withVirtioDevice(VirtioID.net, &context.detail) { device, detail throws(DriverError) in
        try device.start(wanted: VirtioNet.featureMac | VirtioNet.featureStatus)
        var receive = try device.setUpQueue(0)
        var transmit = try device.setUpQueue(1)
        try device.setDriverOK()

        var mac = InlineArray<6, UInt8>(repeating: 0)
        for i in 0..<6 { mac[i] = device.deviceConfig.read8(at: VirtioNet.configMac + i) }
        var macOK = device.features & VirtioNet.featureMac != 0
        if anyLocalMac {
            if mac[0] & 3 != 2 { macOK = false }  // locally administered (bit 1), unicast (bit 0 clear)
        } else {
            for i in 0..<6 where mac[i] != VirtioNet.expectedMac[i] { macOK = false }
        }
        detail.write("mac=")
        for i in 0..<6 {
            if i > 0 { detail.write(":") }
            detail.write(hex: mac[i], digits: 2)
        }
        if device.features & VirtioNet.featureMac == 0 {
            detail.write(" (no VIRTIO_NET_F_MAC)")
        } else if !macOK {
            detail.write(anyLocalMac ? " expected=locally-administered-unicast" : " expected=52:54:00:12:34:56")
        }

        // Receive buffers, one descriptor each; `bufferOf[head]` remembers which is where.
        let receiveArea = DmaMemory.allocate(VirtioNet.receiveBuffers * VirtioNet.receiveBufferSize)
        var bufferOf = InlineArray<16, UInt64>(repeating: 0)
        for i in 0..<min(VirtioNet.receiveBuffers, receive.size) {
            let buffer = receiveArea + UInt64(i * VirtioNet.receiveBufferSize)
            var chain = BufferChain()
            chain.writable(buffer, VirtioNet.receiveBufferSize)
            guard let head = receive.submit(chain) else { throw DriverError("rx-ring-full") }
            bufferOf[Int(head)] = buffer
        }
        receive.notify()

        // Transmit: a zeroed virtio_net_hdr (no offloads), then the 60-byte frame.
        let header = DmaMemory.allocate(VirtioNet.headerSize, alignment: 64)
        let frame = DmaMemory.allocate(60, alignment: 64)
        let bytes = DmaMemory.bytesAt(frame, 60)
        for i in 0..<6 {
            bytes[i] = 0xFF     // destination: broadcast
            bytes[6 + i] = mac[i]  // source: our MAC
        }
        bytes[12] = UInt8(VirtioNet.etherType >> 8)
        bytes[13] = UInt8(truncatingIfNeeded: VirtioNet.etherType)
        _ = DmaMemory.copy("ACTORVMM-NET-TX", to: frame + 14)  // the rest stays zero padding
        var chain = BufferChain()
        chain.readable(header, VirtioNet.headerSize)
        chain.readable(frame, 60)
        _ = try performRequest(&transmit, chain)
        detail.write(" tx=ok")

        // Receive until the peer's frame comes, or time runs out. The host's peer may have bound its socket
        // only after our frame went out (it finds a TAP the VMM names itself late), so once its frames
        // arrive ours goes out again, and the check waits for two more of its frames (it sends one every
        // 50 ms and reads in between): by then it has read ours.
        var frames = 0
        var received = false
        var ours = 0, wanted = 1
        let deadline = CPU.timestamp() &+ VirtioNet.receiveTimeout
        while ours < wanted {
            let now = CPU.timestamp()
            guard now < deadline, let used = receive.waitForUsed(timeout: deadline - now) else { break }
            frames += 1
            let buffer = bufferOf[Int(used.head) & 15]
            bufferOf[Int(used.head) & 15] = 0
            let length = Int(min(used.length, UInt32(VirtioNet.receiveBufferSize)))
            if buffer != 0 && length >= VirtioNet.headerSize + 14 + 15 {
                let packet = UnsafeBufferPointer(DmaMemory.bytesAt(buffer + UInt64(VirtioNet.headerSize),
                                                                   length - VirtioNet.headerSize))
                if packet[12] == UInt8(VirtioNet.etherType >> 8)
                    && packet[13] == UInt8(truncatingIfNeeded: VirtioNet.etherType)
                    && UnsafeBufferPointer(rebasing: packet[14...]).hasPrefix("ACTORVMM-NET-RX") {
                    ours += 1
                }
            }
            if ours > 0 && !received {
                received = true
                _ = try performRequest(&transmit, chain)
                wanted = 3
            }
            if ours < wanted && buffer != 0 {
                // Give the buffer back (a frame not ours, say an IPv6 router solicitation, or one of the
                // peer's frames while the check still waits for more).
                var again = BufferChain()
                again.writable(buffer, VirtioNet.receiveBufferSize)
                guard let head = receive.submit(again) else { throw DriverError("rx-ring-full") }
                bufferOf[Int(head)] = buffer
                receive.notify()
            }
        }
        detail.write(received ? " rx=ok" : " rx=timeout")
        if device.features & VirtioNet.featureStatus != 0 {
            let link = device.deviceConfig.read16(at: VirtioNet.configStatus) & 1 != 0
            detail.write(link ? " link=up" : " link=down")
        }
        detail.write(" frames=")
        detail.write(decimal: frames)
        try checkInterrupts(transmit)
        try checkInterrupts(receive)
        return macOK && received
    }
    guard let ok else {
        context.detail.write("no virtio-net device")
        return false
    }
    return ok
}
