import ActorVmm
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// virtio-blk on both paths to the image — io_uring and synchronous `preadv`/`pwritev` — over in-memory guest
/// RAM and a temporary file: flush ordering, malformed requests, reset with I/O in flight, multi-queue, and
/// the request path allocating nothing.
@Suite struct BlockEngineTests {
    static let engines: [VirtioBlock.Engine] = [.ioUring, .sync]

    /// A device on `engine`; nil (and the test says why) when this host has no io_uring.
    func makeBlock(_ engine: VirtioBlock.Engine, file: TempFile, memory: GuestMemory, loop: EventLoop,
                   numQueues: Int = 1) throws -> (VirtioDriver, VirtioBlock.Engine)? {
        let backend = try VirtioBlock(options: .init(path: file.path, numQueues: numQueues, engine: engine))
        let actual = backend.engine
        guard actual == engine else {
            print("skipped: io_uring is unavailable on this host (\(engine.rawValue) asked, \(actual.rawValue) got)")
            return nil
        }
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        return (VirtioDriver(device: device, memory: memory, msi: msi), actual)
    }

    @Test(arguments: engines) func readsAndWritesOnBothPaths(engine: VirtioBlock.Engine) async throws {
        let loop = try EventLoop(name: "t-blk-\(engine.rawValue)")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024)
        let memory = testMemory()
        guard var (driver, _) = try makeBlock(engine, file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        let data = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        var result = await driver.blockRequest(type: 1, sector: 16, data: data)
        #expect(result.status == 0 && result.used == 1)
        #expect(Array(file.contents()[8192..<16384]) == data)
        result = await driver.blockRequest(type: 0, sector: 16, readLength: 8192)
        #expect(result.status == 0 && result.used == 8193 && result.data == data)
        #expect(await driver.blockRequest(type: 0, sector: 127, readLength: 1024).status == 1)  // past the end
        #expect(await driver.blockRequest(type: 4, sector: 0).status == 0)
        #expect(await driver.device.counters.errors == 1)
    }

    /// A FLUSH completes only after every write submitted before it: eight 1 MiB writes and a flush in one
    /// doorbell come back with the flush last.
    @Test(arguments: engines) func flushCompletesAfterTheWritesBeforeIt(engine: VirtioBlock.Engine) async throws {
        let loop = try EventLoop(name: "t-blk-flush")
        defer { loop.shutdown() }
        let file = TempFile(size: 8 << 20)
        let memory = testMemory(mebibytes: 32)
        guard var (driver, _) = try makeBlock(engine, file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueSize: 64, queueCount: 1) == 0xF)
        var q = driver.queues[0]
        let payload = q.allocate(1 << 20, bytes: [UInt8](repeating: 0x5C, count: 1 << 20))
        var writes: [UInt16] = []
        for index in 0..<8 { writes.append(q.postBlock(type: 1, sector: UInt64(index) * 2048, data: (payload, 1 << 20))) }
        let flush = q.postBlock(type: 4, sector: 0)
        driver.queues[0] = q
        await driver.kick(0)
        let used = await driver.awaitUsed(queue: 0, count: 9)
        #expect(used.count == 9)
        #expect(used.last?.head == UInt32(flush), "the flush came back before a write submitted before it")
        #expect(Set(used.dropLast().map { UInt16($0.head) }) == Set(writes))
        #expect(await driver.device.counters.errors == 0)
        #expect(file.contents().allSatisfy { $0 == 0x5C })
    }

    /// Requests without a status byte, with a short header, or of an unknown type: each comes back (length 0,
    /// IOERR, UNSUPP), is counted, and the device goes on serving.
    @Test(arguments: engines) func malformedRequestsComeBack(engine: VirtioBlock.Engine) async throws {
        let loop = try EventLoop(name: "t-blk-bad")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024, fill: 0x11)
        let memory = testMemory()
        guard var (driver, _) = try makeBlock(engine, file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        var q = driver.queues[0]
        let noStatus = q.post([(q.allocate(16, bytes: [UInt8](repeating: 0, count: 16)), 16, false)])
        let shortHeader = q.allocate(1, bytes: [0xEE])
        let short = q.post([(q.allocate(8), 8, false), (shortHeader, 1, true)])
        driver.queues[0] = q
        await driver.kick(0)
        let used = await driver.awaitUsed(queue: 0, count: 2)
        #expect(used.map { $0.head } == [UInt32(noStatus), UInt32(short)])
        #expect(used.map { $0.length } == [0, 1])
        #expect(try memory.read(at: shortHeader) as UInt8 == 1)
        #expect(await driver.blockRequest(type: 99, sector: 0).status == 2)
        #expect(await driver.blockRequest(type: 0, sector: 0, readLength: 512).data == [UInt8](repeating: 0x11, count: 512))
        #expect(await driver.device.counters.errors == 3)
    }

    /// A reset with writes in flight waits for them (nothing is left on the ring, nothing touches guest
    /// memory afterwards), and the device works again after the driver sets it up anew.
    @Test(arguments: engines) func resetWithIOInFlight(engine: VirtioBlock.Engine) async throws {
        let loop = try EventLoop(name: "t-blk-reset")
        defer { loop.shutdown() }
        let file = TempFile(size: 16 << 20)
        let memory = testMemory(mebibytes: 32)
        guard var (driver, _) = try makeBlock(engine, file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueSize: 64, queueCount: 1) == 0xF)
        var q = driver.queues[0]
        let payload = q.allocate(1 << 20, bytes: [UInt8](repeating: 0x77, count: 1 << 20))
        for index in 0..<16 { q.postBlock(type: 1, sector: UInt64(index) * 2048, data: (payload, 1 << 20)) }
        driver.queues[0] = q
        let usedIndex = GuestAddress(q.used.rawValue + 2)
        await driver.kick(0)
        await driver.w(VirtioDriver.common + 0x14, 1, 0)  // reset, probably with writes still in flight
        #expect(await driver.device.blockRequestsInFlight() == 0)
        let afterReset: UInt16 = try memory.read(at: usedIndex)
        try await Task.sleep(for: .milliseconds(50))
        #expect(try memory.read(at: usedIndex) as UInt16 == afterReset, "the used ring changed after the reset")
        driver.queues = []
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        #expect(await driver.blockRequest(type: 0, sector: 0, readLength: 512).status == 0)
    }

    /// num_queues queues, announced with VIRTIO_BLK_F_MQ and in the config; each serves on its own and
    /// interrupts on its own vector.
    @Test(arguments: engines) func multiQueue(engine: VirtioBlock.Engine) async throws {
        let loop = try EventLoop(name: "t-blk-mq")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024, fill: 0x42)
        let memory = testMemory()
        guard var (driver, _) = try makeBlock(engine, file: file, memory: memory, loop: loop, numQueues: 4) else { return }
        await driver.device.configWrite(offset: 0x04, width: 2, value: 0x6)  // memory decoding, bus master
        #expect(await driver.r(0x04, 4) & (1 << 12) != 0)     // VIRTIO_BLK_F_MQ
        #expect(await driver.r(0x2022, 2) == 4)               // num_queues
        #expect(await driver.r(0x12, 2) == 4)                 // the transport's num_queues
        await driver.w(0x16, 2, 3)
        #expect(await driver.r(0x18, 2) == 128)               // queue_size offered
        #expect(await driver.initialize(features: 1 << 12, queueCount: 4) == 0xF)
        var served = [0, 0, 0, 0]
        for queue in [2, 0, 3, 1, 2] {
            let before = driver.msi.triggers(queue + 1)
            let data = [UInt8](repeating: UInt8(queue), count: 512)
            #expect(await driver.blockRequest(type: 1, sector: UInt64(queue), data: data, queue: queue).status == 0)
            served[queue] += 1
            #expect(driver.msi.triggers(queue + 1) == before + 1, "queue \(queue) interrupts on its own vector")
            #expect(driver.queues.map { Int($0.lastUsed) } == served, "only queue \(queue) completed a request")
        }
        let contents = file.contents()
        for queue in 0..<4 { #expect(contents[queue * 512..<(queue + 1) * 512].allSatisfy { $0 == UInt8(queue) }) }
    }

    @Test func queueOptionsAreChecked() {
        #expect(VirtioBlock.problem(with: .init(path: "x", numQueues: 0)) == "num_queues 0: expected 1 to 64")
        #expect(VirtioBlock.problem(with: .init(path: "x", queueSize: 100)) == "queue_size 100: expected a power of 2 from 2 to 256")
        #expect(VirtioBlock.problem(with: .init(path: "x", queueSize: 512)) != nil)
        #expect(VirtioBlock.problem(with: .init(path: "x", numQueues: 8, queueSize: 256)) == nil)
        #expect(throws: VirtioError("num_queues 65: expected 1 to 64")) { try VirtioBlock.open(.init(path: "/tmp", numQueues: 65)) }
    }
}

extension MockQueue {
    /// Posts a block request: header, optional data buffer (readable for a write, writable for a read),
    /// status byte. Returns the head.
    @discardableResult
    mutating func postBlock(type: UInt32, sector: UInt64, data: (GuestAddress, Int)? = nil) -> UInt16 {
        var header: [UInt8] = []
        appendLE(&header, type)
        appendLE(&header, UInt32(0))
        appendLE(&header, sector)
        var buffers: [(GuestAddress, UInt32, writable: Bool)] = [(allocate(16, bytes: header), 16, false)]
        if let data { buffers.append((data.0, UInt32(data.1), type == 0)) }
        buffers.append((allocate(1, bytes: [0xEE]), 1, true))
        return post(buffers)
    }
}

extension VirtioPciDevice {
    /// Requests the block backend has on its ring.
    func blockRequestsInFlight() -> Int { (backend as? VirtioBlock)?.inFlight.count ?? -1 }
}

/// The ring itself (Sources/CKvm/uring.c), on a pipe so that a read can be held in flight at will.
@Suite struct IoUringTests {
    /// The flush SQE starts only after everything queued before it completed (IOSQE_IO_DRAIN): with a read
    /// waiting for data, the flush waits too; once the read completes, the flush follows.
    @Test func flushWaitsForEverythingBeforeIt() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let ring: IoUring
        do {
            ring = try IoUring(entries: 8, fd: fds[0])
        } catch {
            print("skipped: io_uring is unavailable on this host (\(error))")
            return
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        defer { buffer.deallocate() }
        var iov = iovec(iov_base: buffer, iov_len: 16)
        #expect(ring.queueTransfer(write: false, iovecs: &iov, count: 1, offset: 0, tag: 1))
        #expect(ring.queueFlushAfterAll(tag: 2))
        #expect(ring.submit() == nil)
        usleep(50_000)
        var completed: [UInt64] = []
        while let early = ring.reap() { completed.append(early.tag) }
        #expect(completed.isEmpty, "something completed while the read still waits for data")
        #expect(write(fds[1], "0123456789abcdef", 16) == 16)
        for _ in 0..<200 where completed.count < 2 {
            ring.submit(wait: 1)
            while let completion = ring.reap() { completed.append(completion.tag) }
        }
        #expect(completed == [1, 2])
    }

    /// The ring is locked down (IORING_REGISTER_RESTRICTIONS): an operation outside READV, WRITEV and
    /// FSYNC is refused.
    @Test func theRingRefusesOtherOperations() throws {
        let file = TempFile(size: 4096)
        let fd = open(file.path, O_RDWR)
        defer { close(fd) }
        guard let ring = try? IoUring(entries: 4, fd: fd) else {
            print("skipped: io_uring is unavailable on this host")
            return
        }
        #expect(ring.probeForbiddenOperation() == -EACCES)
    }
}
