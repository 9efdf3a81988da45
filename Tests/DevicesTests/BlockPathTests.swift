import ActorVmm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// The per-request fast path of the split queue: descriptors read with two 8-byte loads from a table
/// checked once, used entries written with one 8-byte store, rings checked against RAM in one look-up each.
@Suite struct SplitQueueFastPathTests {
    /// Every field of a descriptor comes out of its two 8-byte words: a length above 16 bits, the WRITE flag,
    /// and a `next` above 255 (its high byte), in an indirect table of 300 entries.
    @Test func descriptorFieldsComeOutOfTheTwoWords() throws {
        let memory = testMemory()
        var driver = MockQueue(memory: memory)
        var queue = driver.deviceQueue(indirect: true)
        let table = driver.allocate(300 * 16)
        let big = driver.allocate(0x1_0010), status = driver.allocate(1)
        driver.writeDescriptor(0, address: big.rawValue, length: 0x1_0010, flags: 1, next: 0x0102, table: table)
        driver.writeDescriptor(0x0102, address: status.rawValue, length: 1, flags: 2, next: 0xFFFF, table: table)
        driver.writeDescriptor(0, address: table.rawValue, length: 300 * 16, flags: 4, next: 0)
        driver.publish(head: 0)
        let chain = try popRequired(&queue, memory)
        let readable = chain.readable, writable = chain.writable
        try queue.complete(chain, written: 1, memory: memory)
        #expect(readable == [GuestBuffer(address: big, length: 0x1_0010)])
        #expect(writable == [GuestBuffer(address: status, length: 1)])
    }

    /// A used entry is { id: le32, len: le32 }, published by the index after it.
    @Test func usedEntriesAreIdThenLength() throws {
        let memory = testMemory()
        var driver = MockQueue(memory: memory)
        var queue = driver.deviceQueue()
        driver.publish(head: 0)
        try queue.complete(head: 7, written: 0x0A0B_0C0D, memory: memory)
        try queue.addUsed(head: 9, written: 3, memory: memory)
        #expect(try memory.read(UInt16.self, at: GuestAddress(driver.used.rawValue + 2)) == 1, "addUsed published")
        try queue.publishUsed(memory: memory)
        #expect(try memory.read(UInt32.self, at: GuestAddress(driver.used.rawValue + 4)) == 7)
        #expect(try memory.read(UInt32.self, at: GuestAddress(driver.used.rawValue + 8)) == 0x0A0B_0C0D)
        #expect(driver.takeUsed().map { [$0.head, $0.length] } == [[7, 0x0A0B_0C0D], [9, 3]])
    }

    /// Rings that leave guest RAM, or a used ring off its 4-byte alignment, are errors for the queue; nothing
    /// outside RAM is read or written.
    @Test func ringsOutsideRamOrMisalignedAreErrors() throws {
        let memory = testMemory(mebibytes: 1)
        let end = UInt64(1 << 20)
        var driver = MockQueue(memory: memory)
        driver.publish(head: 0)

        var queue = driver.deviceQueue()
        queue.availableRing = GuestAddress(end - 8)  // 4 + 2 × 16 bytes do not fit
        #expect(throws: QueueError.memory(.outOfRange(GuestAddress(end - 8), count: 36))) { _ = try queue.pop(memory: memory)?.head }

        queue = driver.deviceQueue()
        queue.descriptorTable = GuestAddress(end - 64)  // 16 × 16 bytes do not fit
        #expect(throws: QueueError.rejectedChain(head: 0, reason: .memory(.outOfRange(GuestAddress(end - 64), count: 256)))) {
            _ = try queue.pop(memory: memory)?.head
        }

        queue = driver.deviceQueue()
        queue.usedRing = GuestAddress(driver.used.rawValue + 2)
        #expect(throws: QueueError.self) { try queue.complete(head: 0, written: 0, memory: memory) }
        queue.usedRing = GuestAddress(end - 64)  // 4 + 8 × 16 bytes do not fit
        #expect(throws: QueueError.memory(.outOfRange(GuestAddress(end - 64), count: 132))) {
            try queue.complete(head: 0, written: 0, memory: memory)
        }
        #expect(try memory.read(UInt16.self, at: GuestAddress(end - 62)) == 0, "a used index was written near the end")
    }
}

/// virtio-blk's request path: the header read in one piece or gathered, and single requests served without
/// the ring.
@Suite struct BlockPathTests {
    /// A read alone in its doorbell is served at once, not through the ring; two in one doorbell go through
    /// the ring; both give the file's bytes.
    @Test func aSingleReadSkipsTheRing() async throws {
        let loop = try EventLoop(name: "t-blk-alone")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024)
        let bytes = (0..<(64 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        let fd = open(file.path, O_RDWR)
        #expect(pwrite(fd, bytes, bytes.count, 0) == bytes.count)
        close(fd)
        _ = readFully(file.path)  // in the page cache
        let memory = testMemory()
        guard var driver = try makeIoUringBlock(file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        let one = await driver.blockRequest(type: 0, sector: 8, readLength: 4096)
        #expect(one.status == 0 && one.used == 4097 && one.data == Array(bytes[4096..<8192]))
        #expect(await driver.device.servedAlone() == 1)

        var q = driver.queues[0]
        let a = q.allocate(4096), b = q.allocate(4096)
        q.postBlock(type: 0, sector: 0, data: (a, 4096))
        q.postBlock(type: 0, sector: 16, data: (b, 4096))
        driver.queues[0] = q
        await driver.kick(0)
        #expect(await driver.awaitUsed(queue: 0, count: 2).count == 2)
        #expect(await driver.device.servedAlone() == 1, "a request of a two-request doorbell skipped the ring")
        #expect(try memory.readBytes(at: a, count: 4096) == Array(bytes[0..<4096]))
        #expect(try memory.readBytes(at: b, count: 4096) == Array(bytes[8192..<12288]))
    }

    /// A header split over two buffers (8 + 8 bytes) is gathered: the request is served like any other.
    @Test(arguments: BlockEngineTests.engines) func aSplitHeaderIsGathered(engine: VirtioBlock.Engine) async throws {
        let loop = try EventLoop(name: "t-blk-split")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024, fill: 0x3C)
        let memory = testMemory()
        let backend = try VirtioBlock(options: .init(path: file.path, engine: engine))
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        var q = driver.queues[0]
        var type: [UInt8] = [], sector: [UInt8] = []
        appendLE(&type, UInt32(0)); appendLE(&type, UInt32(0))
        appendLE(&sector, UInt64(3))
        let data = q.allocate(512), status = q.allocate(1, bytes: [0xEE])
        let head = q.post([(q.allocate(8, bytes: type), 8, false), (q.allocate(8, bytes: sector), 8, false),
                           (data, 512, true), (status, 1, true)])
        driver.queues[0] = q
        await driver.kick(0)
        let used = await driver.awaitUsed(queue: 0)
        #expect(used.map { [$0.head, $0.length] } == [[UInt32(head), 513]])
        #expect(try memory.readBytes(at: status, count: 1) == [0])
        #expect(try memory.readBytes(at: data, count: 512) == [UInt8](repeating: 0x3C, count: 512))
    }
}

extension VirtioPciDevice {
    /// Requests the block backend served without its ring.
    func servedAlone() -> UInt64 { (backend as? VirtioBlock)?.servedAlone ?? 0 }
}

/// The file's bytes (to bring them into the page cache).
private func readFully(_ path: String) -> Int {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 65536)
    return read(fd, &buffer, buffer.count)
}
