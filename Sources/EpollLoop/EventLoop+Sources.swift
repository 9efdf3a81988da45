import CKvm
import Glibc
import Synchronization

/// Readiness events for a registered file descriptor (the `EPOLL*` bits).
public struct IOEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let readable = IOEvents(rawValue: EPOLLIN.rawValue)
    public static let writable = IOEvents(rawValue: EPOLLOUT.rawValue)
    public static let hangup = IOEvents(rawValue: EPOLLHUP.rawValue)
    public static let error = IOEvents(rawValue: EPOLLERR.rawValue)
}

/// A handle for a registered file descriptor; pass it to ``EventLoop/deregister(_:)``.
public struct Registration: Hashable, Sendable {
    public let id: UInt32
    public let fd: Int32
}

/// A handle for a scheduled timer; pass it to ``EventLoop/cancel(_:)``.
public struct TimerID: Hashable, Sendable {
    public let rawValue: UInt64
}

/// Registered descriptors, keyed by registration id. The epoll token packs (id, fd) so that an event for a
/// descriptor that was deregistered — and perhaps reused by a new registration — is recognised and dropped.
struct Registrations {
    struct Entry {
        let fd: Int32
        let handler: @Sendable (IOEvents) -> Void
    }
    var nextID: UInt32 = 1
    var entries: [UInt32: Entry] = [:]
}

struct Timers {
    var heap = TimerHeap()
    var handlers: [UInt64: @Sendable () -> Void] = [:]
    var nextID: UInt64 = 1
}

extension EventLoop {
    // MARK: - File descriptors

    /// Watches `fd` for `events` (level-triggered); `handler` runs on the loop thread, under the loop's
    /// isolation, each time the descriptor is ready. A handler that works inside an actor on this loop uses
    /// the actor's ``LoopBound/register(fd:events:_:)`` instead. The caller keeps ownership of `fd` and must
    /// deregister before closing it.
    /// The corresponding system call is `epoll_ctl(EPOLL_CTL_ADD)`.
    public func register(
        fd: Int32, events: IOEvents = .readable, _ handler: @escaping @Sendable (IOEvents) -> Void
    ) throws(Errno) -> Registration {
        try register(fd: fd, events: events) { _ in handler }
    }

    /// ``register(fd:events:_:)`` for a handler that needs its own registration (to deregister itself):
    /// `makeHandler` receives it and returns the handler.
    func register(
        fd: Int32, events: IOEvents,
        makeHandler: (Registration) -> @Sendable (IOEvents) -> Void
    ) throws(Errno) -> Registration {
        let id = registrations.withLock { table in
            let id = table.nextID
            table.nextID &+= 1
            if table.nextID == 0 { table.nextID = 1 }
            table.entries[id] = Registrations.Entry(fd: fd, handler: makeHandler(Registration(id: id, fd: fd)))
            return id
        }
        var event = epoll_event(events: events.rawValue, data: epoll_data_t(u64: Self.token(id: id, fd: fd)))
        do {
            _ = try syscallValue { epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) }
        } catch {
            registrations.withLock { _ = $0.entries.removeValue(forKey: id) }
            throw error
        }
        return Registration(id: id, fd: fd)
    }

    /// Stops watching a descriptor. After this returns no handler invocation for it is running or will
    /// start, so the caller may close the descriptor. From another thread this waits for the loop to
    /// acknowledge; on the loop (or once it has shut down) it takes effect at once.
    public func deregister(_ registration: Registration) {
        let remove: @Sendable () -> Void = { [self] in
            registrations.withLock { _ = $0.entries.removeValue(forKey: registration.id) }
            _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, registration.fd, nil)
        }
        if inLoopThread || isIsolatingCurrentContext() == true || isTerminated || !acceptsWork {
            remove()
            return
        }
        let done = ThreadParker()
        execute {
            remove()
            done.signal()
        }
        done.wait()
    }

    var acceptsWork: Bool { queue.withLock { !$0.terminated } }

    static func token(id: UInt32, fd: Int32) -> UInt64 {
        UInt64(id) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    /// Runs the handler for one epoll event, or drops it if its registration is gone (stale token).
    func dispatch(token: UInt64, events: UInt32) {
        let id = UInt32(truncatingIfNeeded: token >> 32)
        let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: token))
        let handler = registrations.withLock { table -> (@Sendable (IOEvents) -> Void)? in
            guard let entry = table.entries[id], entry.fd == fd else { return nil }
            return entry.handler
        }
        handler?(IOEvents(rawValue: events))
    }

    // MARK: - Timers

    /// Runs `body` on the loop thread, under its isolation, once `delay` has passed.
    @discardableResult
    public func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void) -> TimerID {
        let deadline = monotonicNanoseconds() &+ delay.clampedNanoseconds
        let (id, isEarliest) = timers.withLock { state -> (UInt64, Bool) in
            let id = state.nextID
            state.nextID += 1
            state.heap.push(.init(deadline: deadline, id: id))
            state.handlers[id] = body
            return (id, state.heap.earliest?.id == id)
        }
        if isEarliest && !inLoopThread { wake() }
        return TimerID(rawValue: id)
    }

    /// Cancels a timer that has not fired yet; returns false if it already fired or was cancelled.
    @discardableResult
    public func cancel(_ timer: TimerID) -> Bool {
        timers.withLock { $0.handlers.removeValue(forKey: timer.rawValue) != nil }
    }

    /// Milliseconds until the earliest live timer (rounded up), or -1 to wait without a timeout.
    func nextTimeoutMillis() -> Int32 {
        let deadline = timers.withLock { state -> UInt64? in
            while let top = state.heap.earliest, state.handlers[top.id] == nil { _ = state.heap.pop() }
            return state.heap.earliest?.deadline
        }
        guard let deadline else { return -1 }
        let now = monotonicNanoseconds()
        guard deadline > now else { return 0 }
        return Int32(clamping: (deadline - now + 999_999) / 1_000_000)
    }

    /// Fires every timer whose deadline has passed, earliest first.
    func runDueTimers() {
        let now = monotonicNanoseconds()
        while true {
            let due = timers.withLock { state -> (@Sendable () -> Void)? in
                while let top = state.heap.earliest, top.deadline <= now {
                    _ = state.heap.pop()
                    if let handler = state.handlers.removeValue(forKey: top.id) { return handler }
                }
                return nil
            }
            guard let due else { return }
            due()
        }
    }
}
