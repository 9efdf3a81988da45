import ActorVmm
@testable import Devices
import EpollLoop
import Glibc
import Synchronization
import Testing

/// What a hostile or broken driver can do to the virtio transport (issue 12, items 2–5 and 7), without KVM.
@Suite struct HostileTransportTests {
    /// A chain that loops is returned on the used ring with length 0 (its request completes), and the
    /// valid request after it is served as usual, with one interrupt for both.
    @Test func malformedChainsComeBackUnused() async throws {
        let loop = try EventLoop(name: "t-unused")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        var q = driver.queues[0]
        q.writeDescriptor(5, address: 0x8000, length: 8, flags: 1, next: 6)
        q.writeDescriptor(6, address: 0x8000, length: 8, flags: 1, next: 5)
        q.publish(head: 5)
        let good = q.post([(q.allocate(32), 32, true)])
        driver.queues[0] = q
        await driver.kick(0)
        let used = driver.queues[0].takeUsed()
        #expect(used.map { $0.head } == [5, UInt32(good)])
        #expect(used.map { $0.length } == [0, 32])
        #expect(msi.triggers(1) == 1)
        #expect(await device.counters.errors == 1)
        #expect(await device.status & 0x40 == 0)  // one bad request does not break the device
    }

    /// A flood of bad requests logs a few lines, not one per request.
    @Test func guestWarningsAreRateLimited() async throws {
        let loop = try EventLoop(name: "t-ratelimit")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        let started = ContinuousClock.now
        for _ in 0..<10 {
            for _ in 0..<16 {
                // Readable after writable: rejected, returned unused.
                driver.queues[0].writeDescriptor(0, address: 0x8000, length: 8, flags: 3, next: 1)
                driver.queues[0].writeDescriptor(1, address: 0x8000, length: 8, flags: 0, next: 0)
                driver.queues[0].publish(head: 0)
            }
            await driver.kick(0)
            #expect(driver.queues[0].takeUsed().count == 16)
        }
        let limiter = await device.guestLog
        #expect(await device.counters.errors == 160)
        // At most `linesPerWindow` lines per second-long window the flood spanned (on a loaded host the
        // loop above can take several seconds).
        let windows = UInt64((ContinuousClock.now - started) / .seconds(1)) + 2
        #expect(limiter.totalSuppressed >= 160 - min(160, UInt64(limiter.linesPerWindow) * windows))
        #expect(limiter.totalSuppressed > 0)
    }

    /// Port 0x80 codes are remembered (up to `keep`) but logged at most 20 a second.
    @Test func debugPortLinesAreRateLimited() async throws {
        let loop = try EventLoop(name: "t-port80")
        defer { loop.shutdown() }
        let port = DebugPort(loop: loop)
        let start = monotonicNanoseconds()
        for code in 0..<100 { await port.write(offset: 0, width: 1, value: UInt64(code)) }
        let windows = Int((monotonicNanoseconds() - start) / 1_000_000_000) + 1  // one-second windows touched
        #expect(await port.codes.count == 100)
        let limiter = await port.logLimiter
        // 20 lines per window at most: 80 suppressed when the writes fit in one second (a loaded host may
        // spread them over more windows, each allowing 20 more).
        #expect(limiter.totalSuppressed >= UInt64(max(0, 100 - 20 * windows)), "\(windows) window(s)")
    }

    @Test func rateLimiterAllowsABurstPerWindowAndReportsTheRest() {
        var limiter = LogRateLimiter(linesPerWindow: 3, window: .seconds(1))
        let second: UInt64 = 1_000_000_000
        let first = (0..<10).map { limiter.admit(now: 5 * second + UInt64($0)).allowed }
        #expect(first == [true, true, true] + [Bool](repeating: false, count: 7))
        #expect(limiter.pendingSuppressed == 7)
        let next = limiter.admit(now: 6 * second + 10)  // a new window: allowed, with the summary
        #expect(next.allowed && next.suppressedBefore == 7)
        #expect(limiter.pendingSuppressed == 0 && limiter.totalSuppressed == 7)
        _ = limiter.admit(now: 6 * second + 11); _ = limiter.admit(now: 6 * second + 12)
        #expect(!limiter.admit(now: 6 * second + 13).allowed)
        #expect(limiter.flush() == 1 && limiter.flush() == 0)
    }

    /// A guest that adds a request for every one the device serves cannot keep the loop: one turn serves
    /// at most the queue size, then re-queues the rest through the doorbell eventfd, and the loop serves
    /// it on a later turn.
    @Test func drainIsCappedAtTheQueueSizeAndRequeuesTheRest() async throws {
        let loop = try EventLoop(name: "t-drain-cap")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        for _ in 0..<16 { driver.queues[0].post([(driver.queues[0].allocate(8), 8, true)]) }
        let turn = await device.greedyTurn(driver.queues[0], extra: 1000)
        driver.queues[0] = turn.queue
        #expect(turn.served == 16)
        #expect(await device.drainYields == 1)
        #expect(driver.queues[0].takeUsed().count == 16)
        // The yield signalled the doorbell; once the loop watches it, the 16 added meanwhile are served.
        try await device.watchDoorbells()
        var used = 0
        for _ in 0..<400 where used < 16 {
            used += driver.queues[0].takeUsed().count
            if used < 16 { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(used == 16)
    }

    /// A doorbell write that misses its ioeventfd (here: 1 byte wide) does not run the queue on the
    /// calling (vCPU) thread: it signals the doorbell's eventfd, and the loop runs the queue.
    @Test func unusualWidthDoorbellIsHandedToTheLoop() async throws {
        let loop = try EventLoop(name: "t-doorbell")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        driver.queues[0].post([(driver.queues[0].allocate(16), 16, true)])
        await driver.w(VirtioDriver.notify, 1, 0)
        #expect(driver.queues[0].takeUsed().isEmpty)  // not served inside the write
        await driver.w(VirtioDriver.notify + 4 * 40, 2, 0)  // a queue that does not exist: ignored
        try await device.watchDoorbells()
        var used: [(head: UInt32, length: UInt32)] = []
        for _ in 0..<400 where used.isEmpty {
            used = driver.queues[0].takeUsed()
            if used.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(used.map { $0.length } == [16])
    }

    /// With PCI Bus Master Enable clear the device does not touch the queues; setting it again serves
    /// what was queued meanwhile.
    @Test func busMasterEnableGatesQueueProcessing() async throws {
        let loop = try EventLoop(name: "t-bme")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        await device.configWrite(offset: 0x04, width: 2, value: 0x2)  // memory decoding only
        let buffer = driver.queues[0].allocate(16, bytes: [UInt8](repeating: 0xEE, count: 16))
        driver.queues[0].post([(buffer, 16, true)])
        await driver.kick(0)
        #expect(driver.queues[0].takeUsed().isEmpty)
        #expect(try memory.readBytes(at: buffer, count: 16) == [UInt8](repeating: 0xEE, count: 16))
        await device.configWrite(offset: 0x04, width: 2, value: 0x6)
        #expect(driver.queues[0].takeUsed().map { $0.length } == [16])
    }
}

extension VirtioPciDevice {
    /// One drain of queue 0 by a "guest" that publishes a new request each time one is served, `extra`
    /// times at most. Returns how many the turn served.
    func greedyTurn(_ queue: MockQueue, extra: Int) -> (served: Int, queue: MockQueue) {
        var queue = queue, extra = extra, served = 0
        drain(queue: 0) { chain in
            complete(chain, queue: 0, written: 0)
            served += 1
            if extra > 0 {
                extra -= 1
                queue.post([(queue.allocate(8), 8, true)])
            }
            return true
        }
        return (served, queue)
    }
}

/// Two devices on one loop: a guest that keeps device A's queue full does not starve device B.
@Suite struct SharedLoopFairnessTests {
    /// Device A's "guest" adds a new request for each one served, 5,000 times; B's doorbell rings while A is
    /// in its first turn. B is served after at most a few of A's turns, not after all of A's requests.
    @Test func aGreedyQueueDoesNotStarveAnotherDeviceOnTheSameLoop() async throws {
        let loop = try EventLoop(name: "t-fair")
        defer { loop.shutdown() }
        let memoryA = testMemory(), memoryB = testMemory()
        let servedByA = SharedCount(0), servedByAWhenBRan = SharedCount(-1)
        let (deviceB, msiB) = try makeDevice(ProbeBackend(observed: servedByA, record: servedByAWhenBRan), memory: memoryB, loop: loop)
        var driverB = VirtioDriver(device: deviceB, memory: memoryB, msi: msiB)
        await driverB.initialize(queueCount: 1)
        driverB.queues[0].post([(driverB.queues[0].allocate(8), 8, true)])
        let greedy = GreedyBackend(queue: MockQueue(memory: memoryA, size: 16, base: 0x100000), total: 5000, served: servedByA, doorbellOfB: deviceB.notifyFDs[0])
        let (deviceA, msiA) = try makeDevice(greedy, memory: memoryA, loop: loop)
        var driverA = VirtioDriver(device: deviceA, memory: memoryA, msi: msiA)
        await driverA.initialize(queueCount: 1)  // rings at the same place as the backend's MockQueue
        try await deviceA.watchDoorbells()
        try await deviceB.watchDoorbells()
        EventFD.signalRaw(deviceA.notifyFDs[0])
        for _ in 0..<2000 where servedByA.value.load(ordering: .relaxed) < 5000 || servedByAWhenBRan.value.load(ordering: .relaxed) < 0 {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(servedByA.value.load(ordering: .relaxed) == 5000)
        let whenB = servedByAWhenBRan.value.load(ordering: .relaxed)
        #expect(whenB >= 1 && whenB <= 4 * 16, "B ran after A served \(whenB) requests")
        #expect(await deviceA.drainYields > 100)
    }
}

/// A backend whose "guest" publishes a new request each time one is served, until `total` were served; at
/// the first one it rings another device's doorbell.
final class GreedyBackend: VirtioDeviceModel {
    let deviceType = VirtioDeviceType.entropy, queueCount = 1, deviceFeatures: UInt64 = 0, configSize = 0
    var queue: MockQueue
    let total: Int
    let served: SharedCount
    let doorbellOfB: Int32
    var posted = 0

    init(queue: MockQueue, total: Int, served: SharedCount, doorbellOfB: Int32) {
        self.queue = queue; self.total = total; self.served = served; self.doorbellOfB = doorbellOfB
    }
    func readConfig(offset: Int, width: Int) -> UInt64 { 0 }
    func activate(device: isolated VirtioPciDevice) throws(VirtioError) {}
    func reset(device: isolated VirtioPciDevice) {}

    func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        while posted < 16 { post() }  // the guest's first batch
        device.drain(queue: 0) { chain in
            device.complete(chain, queue: 0, written: 0)
            if served.value.add(1, ordering: .relaxed).newValue == 1 { EventFD.signalRaw(doorbellOfB) }
            if posted < total { post() }
            return true
        }
    }

    private func post() {
        queue.post([(GuestAddress(0x8000), 8, true)])
        posted += 1
    }
}

/// A backend that records `observed` when its queue is served, and completes the requests.
final class ProbeBackend: VirtioDeviceModel {
    let deviceType = VirtioDeviceType.entropy, queueCount = 1, deviceFeatures: UInt64 = 0, configSize = 0
    let observed: SharedCount, record: SharedCount
    init(observed: SharedCount, record: SharedCount) { self.observed = observed; self.record = record }
    func readConfig(offset: Int, width: Int) -> UInt64 { 0 }
    func activate(device: isolated VirtioPciDevice) throws(VirtioError) {}
    func reset(device: isolated VirtioPciDevice) {}
    func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        device.drain(queue: 0) { chain in
            record.value.store(observed.value.load(ordering: .relaxed), ordering: .relaxed)
            device.complete(chain, queue: 0, written: 0)
            return true
        }
    }
}

/// An atomic counter shared between a test and the backends it hands to devices.
final class SharedCount: Sendable {
    let value: Atomic<Int>
    init(_ initial: Int) { value = Atomic(initial) }
}
