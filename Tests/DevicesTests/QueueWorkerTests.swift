import ActorVmm
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Synchronization
import Testing

/// Per-queue placement (`--event-loops per-queue`, docs/devices.md "Queue workers"): a queue worker per
/// virtio-blk queue or virtio-net queue pair, each on a loop of its own, the device keeping the registers.
@Suite struct QueueWorkerTests {
    /// Each queue's doorbell is served on its own worker's loop thread, none on the device's.
    @Test func eachQueueIsServedOnItsOwnLoopThread() async throws {
        let rig = try PerQueueRig(queues: 3) { _ in ThreadRecordingBackend(queueCount: 3) }
        defer { rig.shutdown() }
        var driver = try await rig.startedDriver(queueCount: 3)
        for q in [2, 0, 1] {
            _ = driver.queues[q].post([(driver.queues[q].allocate(8), 8, true)])
            await driver.kick(q)
        }
        for q in 0..<3 { #expect(await driver.awaitUsed(queue: q).count == 1, "queue \(q) was not served") }
        for (number, worker) in rig.workers.enumerated() {
            let threads = await worker.withBackend { ($0 as! ThreadRecordingBackend).threads }
            #expect(threads == [number: ["t-pq-q\(number)"]], "worker \(number) served \(threads)")
        }
        let deviceThreads = await rig.device.withBackend { ($0 as! ThreadRecordingBackend).threads }
        #expect(deviceThreads.isEmpty, "the device served queues itself: \(deviceThreads)")
        await rig.device.stop()
    }

    /// A two-queue disk: a write on queue 1 and a read on queue 0 reach the image through the workers' own
    /// backends (rings), and the counters are the workers'.
    @Test func aTwoQueueDiskServesEachQueueOnItsWorker() async throws {
        let file = TempFile(size: 1 << 20)
        let opened = try VirtioBlock.open(.init(path: file.path, numQueues: 2))
        let rig = try PerQueueRig(queues: 2, device: { VirtioBlock(opened.forDeviceWithQueueWorkers) }) { _ in VirtioBlock(opened) }
        defer { rig.shutdown() }
        var driver = try await rig.startedDriver(queueCount: 2)
        let data = [UInt8](repeating: 0x5C, count: 4096)
        #expect(await driver.blockRequest(type: 1, sector: 8, data: data, queue: 1).status == 0)
        let read = await driver.blockRequest(type: 0, sector: 8, readLength: 4096, queue: 0)
        #expect(read.status == 0 && read.data == data)
        #expect(Array(file.contents()[4096..<8192]) == data)
        #expect(await rig.workers[0].counters.requests == 1)
        #expect(await rig.workers[1].counters.requests == 1)
        #expect(await rig.device.counters.requests == 0)
        #expect(await rig.device.totalCounters().requests == 2)
        await rig.device.stop()
    }

    /// A reset by the driver: the device's status reads back 0 only once every worker has stopped (a worker
    /// still busy keeps it at the old value), and a worker serves nothing afterwards.
    @Test func statusReadsZeroOnlyOnceTheWorkersHaveReset() async throws {
        let rig = try PerQueueRig(queues: 2) { _ in ThreadRecordingBackend(queueCount: 2) }
        defer { rig.shutdown() }
        var driver = try await rig.startedDriver(queueCount: 2)
        rig.workerLoops[1].execute { usleep(200_000) }  // worker 1 is busy for a while
        await driver.w(VirtioDriver.common + 0x14, 1, 0)
        #expect(await driver.r(VirtioDriver.common + 0x14, 1) == 0xF, "status read 0 before the busy worker reset")
        var status: UInt64 = 0xF
        for _ in 0..<200 where status != 0 {
            try await Task.sleep(for: .milliseconds(5))
            status = await driver.r(VirtioDriver.common + 0x14, 1)
        }
        #expect(status == 0)
        #expect(await rig.workers[1].holdsQueues == false)
        #expect(await rig.workers[1].isActive == false)
        _ = driver.queues[1].post([(driver.queues[1].allocate(8), 8, true)])
        await driver.kick(1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(driver.queues[1].takeUsed().isEmpty, "a reset worker served a request")
        await rig.device.stop()
    }

    /// What the device tells its workers: with Bus Master Enable clear a worker serves nothing, and serves
    /// what waited once it is set again; a queue vector the driver masked is not triggered by the worker
    /// but marked pending by the device, and delivered when the driver unmasks it.
    @Test func workersFollowBusMasterEnableAndVectorMasks() async throws {
        let rig = try PerQueueRig(queues: 2) { _ in ThreadRecordingBackend(queueCount: 2) }
        defer { rig.shutdown() }
        var driver = try await rig.startedDriver(queueCount: 2)
        await rig.device.configWrite(offset: 0x04, width: 2, value: 0x2)  // memory decoding, no bus mastering
        // The device tells its workers in order, on their loops; a doorbell the worker sees before that
        // message is served as before (like a request already on its way), so the test waits for it.
        for _ in 0..<400 where await rig.workers[1].canDMA { try await Task.sleep(for: .milliseconds(5)) }
        #expect(await rig.workers[1].canDMA == false, "the worker was not told that Bus Master Enable is clear")
        _ = driver.queues[1].post([(driver.queues[1].allocate(8), 8, true)])
        await driver.kick(1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(driver.queues[1].takeUsed().isEmpty, "a worker served a request with BME clear")
        await rig.device.configWrite(offset: 0x04, width: 2, value: 0x6)
        #expect(await driver.awaitUsed(queue: 1).count == 1, "the request that waited was not served once BME was back")

        let vector = 2, entry = VirtioDriver.msixTable + UInt64(vector) * 16  // queue 1's vector
        let before = driver.msi.triggers(vector)
        await driver.w(entry + 12, 4, 1)  // mask
        _ = driver.queues[1].post([(driver.queues[1].allocate(8), 8, true)])
        await driver.kick(1)
        #expect(await driver.awaitUsed(queue: 1).count == 1)
        try await Task.sleep(for: .milliseconds(20))
        #expect(driver.msi.triggers(vector) == before, "the worker triggered a masked vector")
        #expect(await driver.r(0x5000, 4) & (1 << UInt64(vector)) != 0, "the device did not mark it pending")
        await driver.w(entry + 12, 4, 0)  // unmask
        #expect(driver.msi.triggers(vector) == before + 1, "the pending interrupt was not delivered on unmask")
        await rig.device.stop()
    }

    /// Pause, snapshot and restore: quiesced, the workers have completed what was on their rings and handed
    /// their queues back (the device's state has their indices); a request posted meanwhile waits for resume;
    /// a device restored from the state, with workers of its own, serves the driver's next requests.
    @Test func quiesceHandsTheQueuesBackAndARestoredDeviceServesThem() async throws {
        let file = TempFile(size: 8 << 20)
        let opened = try VirtioBlock.open(.init(path: file.path, numQueues: 2))
        let memory = testMemory(mebibytes: 32)
        let rig = try PerQueueRig(queues: 2, memory: memory, device: { VirtioBlock(opened.forDeviceWithQueueWorkers) }) { _ in
            VirtioBlock(opened)
        }
        try await rig.start()
        var driver = rig.driver
        #expect(await driver.initialize(queueSize: 64, queueCount: 2) == 0xF)
        let payload = GuestAddress(16 << 20)  // above both queues' rings and data
        try memory.write(bytes: [UInt8](repeating: 0xA7, count: 1 << 20), at: payload)
        for q in 0..<2 {
            for index in 0..<4 { _ = driver.queues[q].postBlock(type: 1, sector: UInt64(q * 4 + index) * 2048, data: (payload, 1 << 20)) }
            await driver.kick(q)
        }
        // The pause comes once each worker has taken its four requests off the ring (what the pause must then
        // finish); a doorbell not yet seen when the pause comes stays on the ring for after the resume.
        for q in 0..<2 {
            for _ in 0..<400 where await rig.workers[q].counters.requests < 4 { try await Task.sleep(for: .milliseconds(5)) }
        }
        await rig.device.quiesce()
        for q in 0..<2 {
            #expect(driver.queues[q].takeUsed().count == 4, "queue \(q): not every request completed by the pause")
            #expect(await rig.device.queues[q].nextUsed == 4, "queue \(q)'s indices were not handed back")
            #expect(await rig.workers[q].blockRequestsInFlight() == 0)
        }
        #expect(file.contents().allSatisfy { $0 == 0xA7 })
        _ = driver.queues[1].postBlock(type: 4, sector: 0)
        await driver.kick(1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(driver.queues[1].takeUsed().isEmpty, "served while quiesced")
        let state = await rig.device.captureState()
        await rig.device.stop()
        rig.shutdown()

        let target = try PerQueueRig(queues: 2, memory: memory, msi: rig.msi, device: { VirtioBlock(opened.forDeviceWithQueueWorkers) }) { _ in
            VirtioBlock(opened)
        }
        defer { target.shutdown() }
        try await target.takeOver(state, from: &driver)
        #expect(await driver.awaitUsed(queue: 1).count == 1, "the flush posted while paused was not served after the restore")
        _ = driver.queues[0].postBlock(type: 4, sector: 0)
        await driver.kick(0)
        #expect(await driver.awaitUsed(queue: 0).count == 1)
        #expect(await target.workers[0].counters.requests == 1)
        #expect(await target.workers[1].counters.requests == 1)
        await target.device.stop()
        #expect(await target.device.queueWorkers.isEmpty)
    }
}

/// A device with a queue worker per queue (blk-like), on loops `t-pq` and `t-pq-q<N>`, driven by a
/// ``VirtioDriver``: what DeviceManager.makeWorkers sets up, without KVM.
struct PerQueueRig {
    let device: VirtioPciDevice
    let workers: [VirtioPciDevice]
    let loop: EventLoop
    let workerLoops: [EventLoop]
    let memory: GuestMemory
    let msi: FakeMsi

    init(queues: Int, groups: [[Int]]? = nil, memory: GuestMemory = testMemory(), msi: FakeMsi = FakeMsi(),
         device makeDeviceBackend: (() -> any VirtioDeviceModel)? = nil,
         worker makeBackend: (Int) -> any VirtioDeviceModel) throws {
        let groups = groups ?? (0..<queues).map { [$0] }
        let backend = makeDeviceBackend?() ?? ThreadRecordingBackend(queueCount: queues)
        self.memory = memory
        self.msi = msi
        loop = try EventLoop(name: "t-pq")
        workerLoops = try groups.indices.map { try EventLoop(name: "t-pq-q\($0)") }
        let vectors = try msi.allocate(count: backend.queueCount + 1)
        device = try VirtioPciDevice(name: "pq", loop: loop, memory: memory, backend: backend, barAddress: 0xC000_0000,
                                     vectors: vectors, msiController: msi)
        var workers: [VirtioPciDevice] = []
        for (number, group) in groups.enumerated() {
            workers.append(try VirtioPciDevice(name: "pq-q\(number)", loop: workerLoops[number], memory: memory,
                                               backend: makeBackend(number), barAddress: 0xC000_0000, vectors: vectors,
                                               msiController: msi, coordinator: device, servedQueues: group))
        }
        self.workers = workers
    }

    var driver: VirtioDriver { VirtioDriver(device: device, memory: memory, msi: msi) }

    func shutdown() {
        loop.shutdown()
        for loop in workerLoops { loop.shutdown() }
    }
}

extension PerQueueRig {
    /// Adopts the workers and watches every doorbell (call once, before driving).
    func start() async throws {
        await device.adopt(workers: workers)
        try await device.watchDoorbells()
        for worker in workers { try await worker.watchDoorbells() }
    }

    /// Starts this rig as the restored device: `state` restored and resumed, and `driver` pointed at it with
    /// the rings it had (a snapshot's restore, or a migration's destination).
    func takeOver(_ state: [UInt8], from driver: inout VirtioDriver) async throws {
        try await start()
        try await device.restoreState(state)
        await device.resume()
        let rings = driver.queues
        driver = self.driver
        driver.queues = rings
    }

    /// ``start()``, then a driver that has set up `queueCount` queues and reached DRIVER_OK.
    func startedDriver(queueCount: Int) async throws -> VirtioDriver {
        try await start()
        var driver = self.driver
        #expect(await driver.initialize(queueCount: queueCount) == 0xF)
        return driver
    }
}

/// A backend that completes every request at once, noting the thread (by name) that served each queue.
final class ThreadRecordingBackend: VirtioDeviceModel {
    let deviceType = VirtioDeviceType.entropy
    let queueCount: Int
    let deviceFeatures: UInt64 = 0
    let configSize = 0
    var threads: [Int: Set<String>] = [:]

    init(queueCount: Int) { self.queueCount = queueCount }

    func readConfig(offset: Int, width: Int) -> UInt64 { 0 }
    func activate(device: isolated VirtioPciDevice) throws(VirtioError) {}
    func reset(device: isolated VirtioPciDevice) {}

    func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        threads[index, default: []].insert(currentThreadName())
        device.drain(queue: index) { chain in
            device.complete(chain, queue: index, written: 0)
            return true
        }
    }
}

/// The calling thread's name (/proc/thread-self/comm).
func currentThreadName() -> String {
    let fd = open("/proc/thread-self/comm", O_RDONLY)
    guard fd >= 0 else { return "?" }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: 32)
    let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    return String(decoding: bytes.prefix(max(n, 0)), as: UTF8.self).trimmingSuffix("\n")
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

extension VirtioPciDevice {
    /// Runs `body` on the backend inside the actor.
    func withBackend<R: Sendable>(_ body: (any VirtioDeviceModel) -> R) -> R { body(backend) }
}

/// virtio-net with a queue worker per pair, over a fake two-queue TAP (datagram socketpairs).
@Suite struct NetQueueWorkerTests {
    /// A two-pair virtio-net opened on a fake TAP whose two queues are datagram socketpairs; `peers` are the
    /// test's ends (the wire side of queue 0 and of queue 1), closed by the caller.
    func fakeTwoPairTap() throws -> (opened: VirtioNet.Opened, peers: [Int32]) {
        var tap0: [Int32] = [0, 0], tap1: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &tap0) == 0)
        try #require(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &tap1) == 0)
        let opened = VirtioNet.Opened(tap: TapDevice(adopting: [tap0[0], tap1[0]], name: "fake"),
                                      options: VirtioNet.Options(tap: "fake", mac: [2, 0, 0, 0, 0, 1], queuePairs: 2))
        return (opened, [tap0[1], tap1[1]])
    }

    /// Pair 1 is served by its worker, both ways, once the driver has asked for two pairs on the control
    /// queue (which the device serves, and tells the workers of); a quiesce hands back the frame the worker
    /// read and could not deliver yet, and the resumed worker delivers it.
    @Test func pairOneIsServedByItsWorkerAfterVqPairsSet() async throws {
        let (opened, peers) = try fakeTwoPairTap()
        defer { close(peers[0]); close(peers[1]) }
        let rig = try PerQueueRig(queues: 5, groups: [[0, 1], [2, 3]], device: { VirtioNet(opened, serving: .controlQueue) }) {
            VirtioNet(opened, serving: .pair($0))
        }
        defer { rig.shutdown() }
        try await rig.start()
        var driver = rig.driver
        #expect(await driver.initialize(features: NetFeature.multiQueue | NetFeature.ctrlVq, queueCount: 5) == 0xF)
        func inject(_ marker: UInt8) {
            let frame = [UInt8](repeating: 0, count: 12) + [UInt8](repeating: marker, count: 60)
            _ = frame.withUnsafeBytes { send(peers[1], $0.baseAddress, $0.count, 0) }
        }
        let buffers = driver.postReceive(2, count: 1, size: 1526)
        await driver.kick(2)
        inject(0xC1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(driver.queues[2].takeUsed().isEmpty, "pair 1 received before the driver asked for two pairs")
        #expect(await driver.control(4, class: 4, 0, data: [2, 0]) == 0)  // VQ_PAIRS_SET 2, on the device
        let used = try await driver.waitUsed(2)
        #expect(used.map(\.length) == [72])
        if let head = used.first?.head, let buffer = buffers[UInt16(head)] {
            #expect(try driver.memory.readBytes(at: buffer, count: 72).last == 0xC1)
        }

        driver.transmit(3, header: [UInt8](repeating: 0, count: 12), frame: [UInt8](repeating: 0xD2, count: 60))
        await driver.kick(3)
        #expect(try await driver.waitUsed(3).count == 1)
        var frame = [UInt8](repeating: 0, count: 128)
        let n = frame.withUnsafeMutableBytes { recv(peers[1], $0.baseAddress, $0.count, 0) }
        #expect(n == 72 && frame[71] == 0xD2, "pair 1's frame did not leave through TAP queue 1")
        let pair1 = await rig.workers[1].withBackend { ($0 as! VirtioNet).rxFrames + ($0 as! VirtioNet).txFrames }
        #expect(pair1 == 2)
        #expect(await rig.device.withNet { $0.rxFrames + $0.txFrames } == 0)

        // A frame read by worker 1 and waiting for buffers (the one posted is too small: returned unused)
        // moves to the device on quiesce and back on resume.
        _ = driver.postReceive(2, count: 1, size: 40)
        await driver.kick(2)
        inject(0xE3)
        #expect(try await driver.waitUsed(2).map(\.length) == [0])
        await rig.device.quiesce()
        #expect(await rig.device.withNet { $0.pairs[1].pendingLength } == 72, "the waiting frame was not handed back")
        _ = driver.postReceive(2, count: 1, size: 1526)
        await rig.device.resume()
        await driver.kick(2)
        #expect(try await driver.waitUsed(2).map(\.length) == [72])
        await rig.device.stop()
    }

    /// A per-queue net device restored from a snapshot: its workers receive in the negotiated mode
    /// (mergeable buffers: a frame larger than one buffer spans two) on the pairs the snapshot had active.
    @Test func aRestoredDevicesWorkersReceiveInTheNegotiatedMode() async throws {
        let (opened, peers) = try fakeTwoPairTap()
        defer { close(peers[0]); close(peers[1]) }
        let memory = testMemory()
        func rig() throws -> PerQueueRig {
            try PerQueueRig(queues: 5, groups: [[0, 1], [2, 3]], memory: memory, device: { VirtioNet(opened, serving: .controlQueue) }) {
                VirtioNet(opened, serving: .pair($0))
            }
        }
        let source = try rig()
        try await source.start()
        var driver = source.driver
        let features = NetFeature.multiQueue | NetFeature.ctrlVq | NetFeature.mergeableRxBuffers
        #expect(await driver.initialize(features: features, queueCount: 5) == 0xF)
        #expect(await driver.control(4, class: 4, 0, data: [2, 0]) == 0)
        await source.device.quiesce()
        let state = await source.device.captureState()
        await source.device.stop()
        source.shutdown()

        let target = try rig()
        defer { target.shutdown() }
        try await target.takeOver(state, from: &driver)
        _ = driver.postReceive(2, count: 2, size: 64)
        await driver.kick(2)
        let frame = [UInt8](repeating: 0, count: 12) + [UInt8](repeating: 0xF4, count: 100)
        _ = frame.withUnsafeBytes { send(peers[1], $0.baseAddress, $0.count, 0) }
        #expect(try await driver.waitUsed(2, count: 2).map(\.length) == [64, 48], "the frame did not span two mergeable buffers")
        await target.device.stop()
    }
}

