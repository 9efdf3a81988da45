import ActorVmm
import EpollLoop
import Glibc
import Synchronization

/// Turns SIGINT, SIGTERM and SIGHUP into a clean stop. The handler (which may run on any thread) only
/// records the signal and writes an eventfd; a loop (`vmm-main`) watches that eventfd and
/// tells `stopLatch`, whose owner stops the VM and then the process.
///
/// A signal always stops the process: the first one also arms `alarm(stopDeadline)`, and if the clean stop
/// has not ended the process by then (or a second stop signal arrives), the handler restores the terminal
/// and calls `_exit(1)` with a one-line message.
final class SignalWatcher: Sendable {
    let wake: EventFD
    let registration: Registration
    let loop: EventLoop

    /// The eventfd and the last signal, in static storage the async-signal-safe handler can reach.
    nonisolated(unsafe) static var wakeFD: Int32 = -1
    // SAFETY (nonisolated(unsafe)): set once in init, before the handlers are installed; read-only after.
    static let lastSignal = Atomic<Int32>(0)
    /// Stop signals received so far.
    static let received = Atomic<Int>(0)
    /// Seconds a clean stop may take after the first stop signal.
    static let stopDeadline: UInt32 = 10

    init(loop: EventLoop, stopLatch: StopLatch) throws {
        let wake = try EventFD()
        let raw = wake.rawValue
        self.wake = wake
        self.loop = loop
        registration = try loop.register(fd: raw) { _ in
            EventFD.drainRaw(raw)
            let name = switch SignalWatcher.lastSignal.load(ordering: .relaxed) {
            case SIGINT: "SIGINT"
            case SIGTERM: "SIGTERM"
            default: "SIGHUP"
            }
            stopLatch.requestStop(.stopRequested("received \(name)"))
        }
        Self.wakeFD = raw
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = stopSignalHandler
            sigemptyset(&action.sa_mask)
            action.sa_flags = Int32(SA_RESTART)
            sigaction(signal, &action, nil)
        }
        var alarmAction = sigaction()
        alarmAction.__sigaction_handler.sa_handler = stopDeadlineHandler
        sigemptyset(&alarmAction.sa_mask)
        sigaction(SIGALRM, &alarmAction, nil)
    }

    func stop() {
        loop.deregister(registration)
    }

    /// Unblocks, on the calling thread, the signals the VMM handles: SIGINT, SIGTERM, SIGHUP (a clean stop)
    /// and SIGSYS (the seccomp report). A parent may start `actor-vmm` with them blocked (a test runner's
    /// thread does); called first thing on the main thread, so every thread made later inherits the mask.
    static func unblockHandledSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGSYS] { sigaddset(&set, signal) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}

/// Async-signal-safe: atomics, a write(2) and alarm(2).
private func stopSignalHandler(_ signal: Int32) {
    if SignalWatcher.received.add(1, ordering: .relaxed).newValue > 1 {
        forceExit("a second stop signal arrived while stopping; exiting now\n")
    }
    SignalWatcher.lastSignal.store(signal, ordering: .relaxed)
    EventFD.signalRaw(SignalWatcher.wakeFD)
    alarm(SignalWatcher.stopDeadline)
}

private func stopDeadlineHandler(_ signal: Int32) {
    forceExit("the VM did not stop within 10 s of the stop signal; exiting now\n")
}

/// Async-signal-safe: restores the terminal, writes `message` (a literal: no allocation) and exits 1.
private func forceExit(_ message: StaticString) -> Never {
    Terminal.restore()
    let prefix: StaticString = "actor-vmm: error: "
    _ = write(2, prefix.utf8Start, prefix.utf8CodeUnitCount)
    _ = write(2, message.utf8Start, message.utf8CodeUnitCount)
    _exit(1)
}
