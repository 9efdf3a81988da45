import ActorVmm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// virtio-blk on io_uring across a pause and a restore (docs/snapshot.md): nothing may stay on the ring
/// once the device is quiesced, and a restored device must hear of its ring's completions. Both were found
/// with Linux in the nested tier, whose fsync waited forever after a restore.
@Suite struct BlockSnapshotTests {
    /// Eight 1 MiB writes and a FLUSH (which io_uring always completes later, from a worker) kicked just
    /// before the pause: once quiesced, every one has completed — status and used entry in guest memory, no
    /// request left on the ring — and an interrupt still owed waits for resume.
    @Test func quiesceCompletesWhatIsOnTheRing() async throws {
        let loop = try EventLoop(name: "t-blk-quiesce")
        defer { loop.shutdown() }
        let file = TempFile(size: 8 << 20)
        let memory = testMemory(mebibytes: 32)
        guard var driver = try makeIoUringBlock(file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueSize: 64, queueCount: 1) == 0xF)
        var q = driver.queues[0]
        let payload = q.allocate(1 << 20, bytes: [UInt8](repeating: 0xA7, count: 1 << 20))
        for index in 0..<8 { _ = q.postBlock(type: 1, sector: UInt64(index) * 2048, data: (payload, 1 << 20)) }
        let flush = q.postBlock(type: 4, sector: 0)
        driver.queues[0] = q
        await driver.kick(0)
        await driver.device.quiesce()
        #expect(await driver.device.blockRequestsInFlight() == 0, "requests left on the ring of a quiesced device")
        let used = driver.queues[0].takeUsed()
        #expect(used.count == 9 && used.last?.head == UInt32(flush), "every request completed by the pause: \(used)")
        // Whatever completed before the quiesce may have interrupted; from here until resume nothing may.
        let interrupts = driver.msi.triggers(1)
        let owed = await driver.device.unsignalled[0]
        usleep(100_000)
        #expect(driver.msi.triggers(1) == interrupts, "an interrupt while quiesced")
        await driver.device.resume()
        #expect(driver.msi.triggers(1) == interrupts + (owed ? 1 : 0), "the interrupt owed goes out on resume")
        #expect(await driver.device.unsignalled[0] == false)
        #expect(file.contents().allSatisfy { $0 == 0xA7 })
        await driver.device.stop()
    }

    /// A device restored into a new VM serves requests through its ring: a FLUSH after the restore (completed
    /// later by an io_uring worker) comes back, which needs the ring's eventfd watched again.
    @Test func aRestoredDeviceHearsItsRingsCompletions() async throws {
        let loop = try EventLoop(name: "t-blk-restore")
        defer { loop.shutdown() }
        let file = TempFile(size: 1 << 20)
        let memory = testMemory()
        guard var driver = try makeIoUringBlock(file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        #expect(await driver.blockRequest(type: 4, sector: 0).status == 0)
        await driver.device.quiesce()
        let state = await driver.device.captureState()
        await driver.device.stop()

        guard let target = try makeIoUringBlock(file: file, memory: memory, loop: loop) else { return }
        try await target.device.restoreState(state)
        await target.device.resume()
        let rings = driver.queues  // the guest's driver goes on with its rings where it left them
        driver = VirtioDriver(device: target.device, memory: memory, msi: target.msi)
        driver.queues = rings
        var q = driver.queues[0]
        let flush = q.postBlock(type: 4, sector: 0)
        driver.queues[0] = q
        await driver.kick(0)
        let used = await driver.awaitUsed(queue: 0)
        #expect(used.map(\.head) == [UInt32(flush)], "the flush after the restore never came back")
        await target.device.stop()
    }
}

/// A virtio-blk device on io_uring (BlockSnapshotTests, BlockPathTests); nil (the test says why) when this host has none.
func makeIoUringBlock(file: TempFile, memory: GuestMemory, loop: EventLoop) throws -> VirtioDriver? {
    let backend = try VirtioBlock(options: .init(path: file.path, engine: .ioUring))
    guard backend.engine == .ioUring else {
        print("skipped: io_uring is unavailable on this host")
        return nil
    }
    let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
    return VirtioDriver(device: device, memory: memory, msi: msi)
}
