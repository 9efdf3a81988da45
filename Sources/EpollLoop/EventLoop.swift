import CKvm
import Glibc
import Synchronization

/// One thread blocked in `epoll_wait`, serving as a Swift `SerialExecutor` and `TaskExecutor`.
///
/// An actor adopts a loop as its executor by conforming to ``LoopBound`` (which supplies `unownedExecutor`
/// from the actor's `loop`, and fd and timer handlers that run inside the actor). From then on
/// everything that touches the actor's state runs *while some thread owns the loop*:
///
/// - the loop thread itself, running enqueued jobs, fd-readiness handlers and timers;
/// - or a vCPU thread that found the loop idle and claimed it with one compare-exchange
///   (``runIfIdle(_:)``, the *inline-if-idle* fast path for PIO/MMIO exits).
///
/// Ownership is a single atomic word holding the owning thread's id (0 when idle). ``checkIsolated()`` and
/// ``isIsolatingCurrentContext()`` answer "does the current thread own this loop?", so handlers running on
/// either kind of owner may enter the actor with `assumeIsolated`, with no Task and no extra hop.
///
/// Thread ownership of state, by field:
/// - `owner`, `pendingCount`, `mayBlock`, `wakeupWrites`: atomics, any thread.
/// - `queue` (jobs and closures), `registrations`, `timers`: each in its own `Mutex`, any thread.
/// - `loopThread`: written once by the loop thread before `init` returns, read-only afterwards.
public final class EventLoop: SerialExecutor, TaskExecutor, Sendable {
    /// Work waiting for the loop: Swift jobs (from actors and tasks) or plain closures (from vCPU threads).
    enum Work: Sendable {
        case job(UnownedJob)
        case closure(@Sendable () -> Void)
    }

    struct QueueState {
        var work: [Work] = []
        var stopping = false
        var terminated = false
    }

    /// The loop's name, also the thread's name (truncated to 15 bytes by the kernel).
    public let name: String

    let epollFD: Int32
    let wakeFD: EventFD
    /// pthread id of the thread that currently runs this loop's work; 0 when idle.
    let owner = Atomic<UInt>(0)
    /// Number of entries in `queue.work`; lets the loop and enqueuers decide about wake-ups without the lock.
    let pendingCount = Atomic<Int>(0)
    /// True while the loop thread is about to sleep (or sleeping) in `epoll_wait`.
    let mayBlock = Atomic<Bool>(false)
    /// How many times the wake-up eventfd was written (coalescing makes this far smaller than the job count).
    let wakeupWrites = Atomic<Int>(0)
    let queue = Mutex(QueueState())
    let registrations = Mutex(Registrations())
    let timers = Mutex(Timers())
    let loopThreadID = Atomic<UInt>(0)
    let started = ThreadParker()

    /// Reserved epoll token for the wake-up eventfd; registrations use ids from 1.
    static let wakeToken: UInt64 = 0

    /// Runs first on the loop thread, before `init` returns (the VMM installs the thread's seccomp filter).
    let onStart: (@Sendable () -> Void)?

    /// Starts a new loop thread named `name`. `onStart` runs on that thread, after it is named and before
    /// any work; `init` returns once it has.
    public init(name: String, onStart: (@Sendable () -> Void)? = nil) throws(Errno) {
        self.name = name
        self.onStart = onStart
        epollFD = try syscallValue { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        do {
            wakeFD = try EventFD()
        } catch {
            close(epollFD)
            throw error
        }
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: Self.wakeToken))
        _ = try? syscallValue { epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD.rawValue, &event) }

        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&thread, nil, eventLoopThreadEntry, context)
        guard result == 0 else {
            Unmanaged<EventLoop>.fromOpaque(context).release()
            close(epollFD)
            throw Errno(rawValue: result)
        }
        pthread_detach(thread)
        started.wait()  // the loop thread has recorded its id
    }

    deinit { close(epollFD) }

    // MARK: - Executor conformance

    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// True when the calling thread currently owns this loop (it is the loop thread running work, or a vCPU
    /// thread inside ``runIfIdle(_:)``).
    public func isIsolatingCurrentContext() -> Bool? {
        owner.load(ordering: .acquiring) == UInt(pthread_self())
    }

    public func checkIsolated() {
        precondition(
            owner.load(ordering: .acquiring) == UInt(pthread_self()),
            "not isolated to event loop '\(name)': the current thread does not own it")
    }

    /// True on this loop's own thread (whether or not it is running work right now).
    public var inLoopThread: Bool { loopThreadID.load(ordering: .relaxed) == UInt(pthread_self()) }

    /// How many times the wake-up eventfd has been written so far.
    public var wakeupCount: Int { wakeupWrites.load(ordering: .relaxed) }

    // MARK: - Submitting work

    /// Runs `body` on the loop thread, after the work already queued. Usable from any thread.
    public func execute(_ body: @escaping @Sendable () -> Void) {
        submit(.closure(body))
    }

    func submit(_ work: Work) {
        queue.withLock { state in
            precondition(!state.terminated, "work submitted to event loop '\(name)' after it shut down")
            state.work.append(work)
        }
        pendingCount.add(1, ordering: .sequentiallyConsistent)
        wakeIfSleeping()
    }

    /// Writes the wake-up eventfd only if the loop announced it may block and nobody woke it since.
    /// The loop stores `mayBlock = true` *then* reads `pendingCount`; we add to `pendingCount` *then* exchange
    /// `mayBlock` — both sequentially consistent — so at least one side sees the other (no lost wake-up).
    func wakeIfSleeping() {
        if mayBlock.exchange(false, ordering: .sequentiallyConsistent) {
            wakeupWrites.add(1, ordering: .relaxed)
            wakeFD.signal()
        }
    }

    /// Forces one wake-up (used when timers or shutdown change what the loop waits for).
    func wake() {
        mayBlock.store(false, ordering: .sequentiallyConsistent)
        wakeupWrites.add(1, ordering: .relaxed)
        wakeFD.signal()
    }

    // MARK: - Inline-if-idle

    /// Runs `body` on the calling thread under this loop's isolation if the loop is idle; returns nil
    /// (without running `body`) if another thread owns it. The claim is one compare-exchange.
    ///
    /// This is the vCPU fast path: a PIO/MMIO exit is handled on the vCPU thread, inside the device actor's
    /// isolation (`assumeIsolated` succeeds because this thread now owns the loop), without waking anyone.
    /// Must not be called from a thread that already owns the loop.
    @inline(__always)
    public func runIfIdle<R>(_ body: () throws -> R) rethrows -> R? {
        let me = UInt(pthread_self())
        guard owner.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged else { return nil }
        defer { owner.store(0, ordering: .releasing) }
        return try body()
    }

    /// Claims the loop for the loop thread, yielding while a vCPU thread holds it (its handlers are short).
    func claimForLoopThread() {
        let me = UInt(pthread_self())
        while !owner.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged {
            sched_yield()
        }
    }

    func releaseForLoopThread() {
        owner.store(0, ordering: .releasing)
    }

    // MARK: - Shutdown

    /// Stops the loop: work already queued (and work that it queues in turn) still runs, then the thread
    /// exits and its descriptors are closed. Submitting work after that is a programming error.
    /// Waits for the thread to finish unless called on the loop thread itself.
    public func shutdown() {
        let alreadyStopping = queue.withLock { state in
            defer { state.stopping = true }
            return state.stopping
        }
        if !alreadyStopping { wake() }
        guard !inLoopThread else { return }
        terminatedSignal.wait()
        terminatedSignal.signal()  // let other callers of shutdown() through too
    }

    let terminatedSignal = ThreadParker()

    let threadExited = Atomic<Bool>(false)

    /// True once the loop thread has exited.
    public var isTerminated: Bool { threadExited.load(ordering: .acquiring) }

    // MARK: - The loop

    func runLoop() {
        loopThreadID.store(UInt(pthread_self()), ordering: .relaxed)
        let threadName = String(name.utf8.prefix(15)) ?? "event-loop"
        _ = ckvm_set_thread_name(threadName)
        onStart?()
        started.signal()

        let capacity = 64
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }

        while true {
            claimForLoopThread()
            runQueuedWork()
            runDueTimers()
            if finishIfStopping() { releaseForLoopThread(); break }
            releaseForLoopThread()

            // Announce that we may sleep, then look again: see `wakeIfSleeping`.
            mayBlock.store(true, ordering: .sequentiallyConsistent)
            let timeout: Int32 = pendingCount.load(ordering: .sequentiallyConsistent) > 0 ? 0 : nextTimeoutMillis()
            let count = epoll_wait(epollFD, events, Int32(capacity), timeout)
            mayBlock.store(false, ordering: .sequentiallyConsistent)
            guard count > 0 else { continue }  // timeout, or EINTR

            claimForLoopThread()
            // Work queued before these descriptors became ready runs before their handlers: a message sent
            // to an actor, then an event it causes (a device's word to its queue worker, then the guest's
            // doorbell), arrive in that order even when one epoll_wait reports the event with no wake-up.
            runQueuedWork()
            for index in 0..<Int(count) {
                let event = events[index]
                if event.data.u64 == Self.wakeToken {
                    wakeFD.drain()
                } else {
                    dispatch(token: event.data.u64, events: event.events)
                }
            }
            releaseForLoopThread()
        }
        threadExited.store(true, ordering: .releasing)
        terminatedSignal.signal()
        Unmanaged.passUnretained(self).release()  // balances the retain taken for the thread in init
    }

    /// Runs queued work in FIFO order until the queue is empty (work queued meanwhile runs too).
    func runQueuedWork() {
        while pendingCount.load(ordering: .acquiring) > 0 {
            let batch = queue.withLock { state -> [Work] in
                defer { state.work.removeAll(keepingCapacity: true) }
                return state.work
            }
            pendingCount.subtract(batch.count, ordering: .sequentiallyConsistent)
            for work in batch {
                switch work {
                case .job(let job):
                    job.runSynchronously(
                        isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
                case .closure(let body):
                    body()
                }
            }
        }
    }

    /// When stopping and nothing is left to run, marks the loop so that no more work is accepted.
    func finishIfStopping() -> Bool {
        queue.withLock { state in
            if state.stopping && state.work.isEmpty { state.terminated = true }
            return state.terminated
        }
    }
}

/// The loop thread's entry point (a free function: pthread entry points must not carry actor isolation).
private func eventLoopThreadEntry(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    // SAFETY: `context` is the retained EventLoop passed by `EventLoop.init`; `runLoop` releases it on exit.
    let loop = Unmanaged<EventLoop>.fromOpaque(context!).takeUnretainedValue()
    loop.runLoop()
    return nil
}
