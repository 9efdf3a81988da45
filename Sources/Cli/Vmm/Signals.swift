import ActorVmm
import EpollLoop
import Glibc
import Synchronization

/// Turns SIGINT, SIGTERM and SIGHUP into a clean stop. The handler (which may run on any thread) only
/// records the signal and writes an eventfd; a loop (`vmm-main`) watches that eventfd and
/// tells `stopLatch`, whose owner stops the VM and then the process.
final class SignalWatcher: Sendable {
    let wake: EventFD
    let registration: Registration
    let loop: EventLoop

    /// The eventfd and the last signal, in static storage the async-signal-safe handler can reach.
    nonisolated(unsafe) static var wakeFD: Int32 = -1
    // SAFETY (nonisolated(unsafe)): set once in init, before the handlers are installed; read-only after.
    static let lastSignal = Atomic<Int32>(0)

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

/// Async-signal-safe: an atomic store and a write(2).
private func stopSignalHandler(_ signal: Int32) {
    SignalWatcher.lastSignal.store(signal, ordering: .relaxed)
    EventFD.signalRaw(SignalWatcher.wakeFD)
}
