@testable import EpollLoop
import Glibc
import Synchronization
import Testing

/// An actor bound to a loop through ``LoopBound`` (no `unownedExecutor` of its own).
actor Bound: LoopBound {
    nonisolated let loop: EventLoop
    /// (ran on this actor's loop thread, the loop isolated the current context) for each handler run.
    var runs: [(onOwnLoop: Bool, isolated: Bool)] = []
    var events: [IOEvents] = []

    init(loop: EventLoop) { self.loop = loop }

    /// Records where it runs: a handler must run on this actor's loop, which isolates it.
    func noteRun() {
        runs.append((loop.inLoopThread, loop.isIsolatingCurrentContext() == true))
    }
}

@Suite struct LoopBoundTests {
    @Test func theActorsExecutorIsItsLoop() async throws {
        let loop = try EventLoop(name: "test-bound")
        defer { loop.shutdown() }
        let bound = Bound(loop: loop)
        await bound.noteRun()  // an ordinary actor call: a job on the actor's executor
        let runs = await bound.runs
        #expect(runs.count == 1 && runs[0].onOwnLoop && runs[0].isolated)
    }

    @Test func descriptorHandlerRunsInsideTheActorOnItsOwnLoop() async throws {
        // Two loops: the test registers through the actor, never naming a loop, and the handler must run on
        // the actor's loop (not `other`), isolated to the actor.
        let other = try EventLoop(name: "test-other")
        defer { other.shutdown() }
        let loop = try EventLoop(name: "test-bound-fd")
        defer { loop.shutdown() }
        let bound = Bound(loop: loop)
        let fd = try EventFD()
        let registration = try bound.register(fd: fd.rawValue) { bound, events in
            EventFD.drainRaw(fd.rawValue)
            bound.noteRun()  // synchronous: the handler is isolated to `bound`
            bound.events.append(events)
        }
        fd.signal()
        #expect(await waitForRuns(bound, 1))
        loop.deregister(registration)
        fd.signal()
        usleep(20_000)
        let runs = await bound.runs
        #expect(runs.count == 1, "no handler after deregister")
        #expect(runs.allSatisfy { $0.onOwnLoop && $0.isolated })
        #expect(await bound.events == [.readable])
    }

    @Test func timerRunsInsideTheActorAndCanBeCancelled() async throws {
        let loop = try EventLoop(name: "test-bound-timer")
        defer { loop.shutdown() }
        let bound = Bound(loop: loop)
        let cancelled = bound.schedule(after: .milliseconds(5)) { $0.events.append(.error) }
        bound.schedule(after: .milliseconds(10)) { $0.noteRun() }
        #expect(loop.cancel(cancelled))
        #expect(await waitForRuns(bound, 1))
        usleep(20_000)
        let runs = await bound.runs
        #expect(runs.count == 1 && runs[0].onOwnLoop && runs[0].isolated)
        #expect(await bound.events.isEmpty, "the cancelled timer did not run")
    }

    @Test func registrationDoesNotKeepTheActorAlive() async throws {
        let loop = try EventLoop(name: "test-bound-weak")
        defer { loop.shutdown() }
        let fired = Atomic<Int>(0)
        weak var weakBound: Bound?
        let fd = try EventFD()
        var registration: Registration?
        do {
            let bound = Bound(loop: loop)
            weakBound = bound
            registration = try bound.register(fd: fd.rawValue) { _, _ in
                EventFD.drainRaw(fd.rawValue)
                fired.add(1, ordering: .relaxed)
            }
            bound.schedule(after: .milliseconds(5)) { _ in fired.add(1, ordering: .relaxed) }
        }
        #expect(weakBound == nil, "the loop holds the handlers, not the actor")
        fd.signal()
        usleep(30_000)  // the timer's deadline and the fd event have passed
        #expect(fired.load(ordering: .relaxed) == 0, "a handler for a gone actor is dropped")
        // ... and its registration removed, so the readable eventfd does not keep the loop spinning.
        #expect(waitUntil { loop.registrations.withLock { $0.entries.isEmpty } })
        if let registration { loop.deregister(registration) }
    }
}

/// Waits (up to 5 s) until `bound` has recorded `count` handler runs.
private func waitForRuns(_ bound: Bound, _ count: Int) async -> Bool {
    for _ in 0..<5000 {
        if await bound.runs.count >= count { return true }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return false
}
