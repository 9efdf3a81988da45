import EpollLoop
import Synchronization

/// Runs `body` as a task that prefers `loop`, and blocks the calling thread until it has finished.
///
/// main.swift is synchronous and waits with this instead of `await`. Asynchronous top-level code belongs to
/// the main actor: each time it resumed, libdispatch would hand it to a worker thread of its own, started by
/// whichever thread resumed it — `vmm-api`, say, so that the worker, and the main task on it, would run
/// under the API thread's seccomp filter (docs/security.md). This way `actor-vmm` has no such threads.
func blockingWait<T: Sendable>(on loop: EventLoop, _ body: @escaping @Sendable () async -> T) -> T {
    let done = ThreadParker()
    let box = ResultBox<T>()
    Task(executorPreference: loop) {
        let value = await body()
        box.value.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    return box.value.withLock { $0! }
}

private final class ResultBox<T: Sendable>: Sendable {
    let value = Mutex<T?>(nil)
}
