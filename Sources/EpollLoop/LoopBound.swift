/// An actor whose executor is an ``EventLoop``: every device, the API server and the lifecycle controller.
///
/// A conformer declares only `nonisolated let loop: EventLoop`; this protocol supplies the actor's
/// `unownedExecutor` from it, and the typed helpers ``register(fd:events:_:)`` and ``schedule(after:_:)``
/// that run a descriptor or timer handler *inside the actor*: the handler receives the actor as an
/// `isolated` parameter, so it reads and writes actor state directly, with no `Task` and no hop.
///
/// The helpers register on `self.loop`, the loop that is the actor's executor, so a handler cannot be put on
/// another actor's loop by mistake: there is no loop argument to get wrong. (The one way left to break it is
/// a conformer that writes its own `unownedExecutor`; its handlers then trap in `assumeIsolated` the first
/// time they run.)
///
/// ```swift
/// actor Device: LoopBound {
///     nonisolated let loop: EventLoop
///     var kicks = 0
///     func watch(_ fd: Int32) throws(Errno) -> Registration {
///         try register(fd: fd) { device, _ in device.kicks += 1 }
///     }
/// }
/// ```
public protocol LoopBound: Actor {
    /// The loop that is this actor's executor and runs its descriptor and timer handlers.
    nonisolated var loop: EventLoop { get }
}

extension LoopBound {
    /// The actor's executor: its event loop. Conformers get this for free and should not write their own.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    /// Watches `fd` for `events` on this actor's loop (``EventLoop/register(fd:events:_:)``); `handler` runs
    /// on the loop, isolated to this actor, each time the descriptor is ready. The registration does not keep
    /// the actor alive: the first event after the actor is gone removes the registration instead (so that a
    /// level-triggered descriptor cannot keep the loop spinning). Deregister with `loop.deregister` before
    /// closing `fd`.
    public nonisolated func register(
        fd: Int32, events: IOEvents = .readable,
        _ handler: @escaping @Sendable (isolated Self, IOEvents) -> Void
    ) throws(Errno) -> Registration {
        try loop.register(fd: fd, events: events) { [loop] registration in
            { [weak self] events in
                guard let self else { return loop.deregister(registration) }
                self.assumeIsolated { handler($0, events) }
            }
        }
    }

    /// Runs `body` on this actor's loop, isolated to this actor, once `delay` has passed
    /// (``EventLoop/schedule(after:_:)``); nothing runs if the actor is gone by then.
    @discardableResult
    public nonisolated func schedule(
        after delay: Duration, _ body: @escaping @Sendable (isolated Self) -> Void
    ) -> TimerID {
        loop.schedule(after: delay) { [weak self] in
            self?.assumeIsolated { body($0) }
        }
    }
}
