import EpollLoop
import Glibc
import Synchronization
import Testing

/// An actor whose executor is an EventLoop, as every ActorVMM device is.
actor Counter {
    nonisolated let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    var values: [Int] = []
    var threadsOK = true

    init(loop: EventLoop) { self.loop = loop }

    func append(_ value: Int) {
        if !loop.inLoopThread && loop.isIsolatingCurrentContext() != true { threadsOK = false }
        values.append(value)
    }
}

/// Collects values from several threads (test bookkeeping only).
final class Box: Sendable {
    let values = Mutex<[Int]>([])
    func add(_ v: Int) { values.withLock { $0.append(v) } }
    var all: [Int] { values.withLock { $0 } }
}

func waitUntil(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
    while !condition() {
        if monotonicNanoseconds() > deadline { return false }
        usleep(1000)
    }
    return true
}

@Suite struct EventLoopTests {
    @Test func actorJobsRunInOrderOnTheLoopThread() async throws {
        let loop = try EventLoop(name: "test-order")
        defer { loop.shutdown() }
        let counter = Counter(loop: loop)
        for i in 0..<200 { await counter.append(i) }
        #expect(await counter.values == Array(0..<200))
        #expect(await counter.threadsOK)
        let onLoop = counter.loop.inLoopThread
        #expect(!onLoop, "the test itself is not on the loop thread")
    }

    @Test func closuresRunInFIFOOrderOnTheLoopThread() throws {
        let loop = try EventLoop(name: "test-fifo")
        defer { loop.shutdown() }
        let box = Box()
        let wrongThread = Atomic<Int>(0)
        for i in 0..<1000 {
            loop.execute {
                if !loop.inLoopThread { wrongThread.add(1, ordering: .relaxed) }
                box.add(i)
            }
        }
        #expect(waitUntil { box.all.count == 1000 })
        #expect(box.all == Array(0..<1000))
        #expect(wrongThread.load(ordering: .relaxed) == 0)
    }

    @Test func fdHandlerEntersTheActorWithAssumeIsolated() async throws {
        let loop = try EventLoop(name: "test-fd")
        defer { loop.shutdown() }
        let counter = Counter(loop: loop)
        let fd = try EventFD()
        let raw = fd.rawValue
        let registration = try loop.register(fd: raw) { _ in
            let value = Int(EventFD.drainRaw(raw))
            counter.assumeIsolated { $0.append(value) }
        }
        fd.signal(7)
        #expect(waitUntil { loop.runIfIdle { counter.assumeIsolated { $0.values } } == [7] })
        loop.deregister(registration)
    }

    @Test func deregisteredDescriptorNoLongerFires() throws {
        let loop = try EventLoop(name: "test-dereg")
        defer { loop.shutdown() }
        let fired = Atomic<Int>(0)
        let fd = try EventFD()
        let raw = fd.rawValue
        let registration = try loop.register(fd: raw) { _ in
            _ = EventFD.drainRaw(raw)
            fired.add(1, ordering: .relaxed)
        }
        fd.signal()
        #expect(waitUntil { fired.load(ordering: .relaxed) == 1 })
        loop.deregister(registration)
        fd.signal()
        usleep(50_000)
        #expect(fired.load(ordering: .relaxed) == 1)
    }

    @Test func wakeUpsAreCoalescedWhileTheLoopIsBusy() throws {
        let loop = try EventLoop(name: "test-wake")
        defer { loop.shutdown() }
        let started = ThreadParker()
        let ran = Atomic<Int>(0)
        loop.execute {
            started.signal()
            usleep(100_000)  // keep the loop busy while work piles up
        }
        started.wait()
        let before = loop.wakeupCount
        for _ in 0..<5000 { loop.execute { ran.add(1, ordering: .relaxed) } }
        #expect(waitUntil { ran.load(ordering: .relaxed) == 5000 })
        // The loop was awake: queuing 5000 items must not write the eventfd per item.
        #expect(loop.wakeupCount - before <= 1)
    }

    @Test func runIfIdleClaimsOnlyAnIdleLoop() throws {
        let loop = try EventLoop(name: "test-inline")
        defer { loop.shutdown() }
        let counter = Counter(loop: loop)
        // Idle: the calling thread claims the loop and is isolated to the actor. (A loop that has just started
        // may still own itself for a moment, and a loaded host may run it late: retry until it is idle.)
        var result: Bool?
        #expect(waitUntil {
            result = loop.runIfIdle { () -> Bool in
                counter.assumeIsolated { $0.append(1) }
                return loop.isIsolatingCurrentContext() == true
            }
            return result != nil
        })
        #expect(result == true)
        #expect(loop.isIsolatingCurrentContext() == false, "released after the body")
        // Busy: the loop thread owns it, so the claim fails and nothing runs.
        let busy = ThreadParker(), release = ThreadParker()
        loop.execute { busy.signal(); release.wait() }
        busy.wait()
        #expect(loop.runIfIdle { 1 } == nil)
        release.signal()
        #expect(waitUntil { loop.runIfIdle { 2 } == 2 })
    }

    @Test func timersFireInDeadlineOrderAndCanBeCancelled() throws {
        let loop = try EventLoop(name: "test-timers")
        defer { loop.shutdown() }
        let box = Box()
        loop.schedule(after: .milliseconds(30)) { box.add(3) }
        loop.schedule(after: .milliseconds(10)) { box.add(1) }
        let cancelled = loop.schedule(after: .milliseconds(20)) { box.add(99) }
        loop.schedule(after: .milliseconds(20)) { box.add(2) }
        #expect(loop.cancel(cancelled))
        let start = monotonicNanoseconds()
        #expect(waitUntil { box.all.count == 3 })
        #expect(box.all == [1, 2, 3])
        #expect(monotonicNanoseconds() - start >= 25_000_000, "the 30 ms timer did not fire early")
        #expect(!loop.cancel(cancelled), "a cancelled timer cannot be cancelled twice")
    }

    @Test func shutdownRunsPendingWorkThenStopsTheThread() throws {
        let loop = try EventLoop(name: "test-shutdown")
        let ran = Atomic<Int>(0)
        loop.execute { usleep(50_000) }
        for _ in 0..<100 { loop.execute { ran.add(1, ordering: .relaxed) } }
        loop.shutdown()
        #expect(ran.load(ordering: .relaxed) == 100)
        #expect(loop.isTerminated)
    }
}
