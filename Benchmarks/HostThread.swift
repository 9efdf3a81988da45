// A plain pthread for the floors of rows 2 and 3: one closure, optionally pinned to a host CPU, joined by
// the caller. (Swift's own threads would add an executor in between; the floors want the bare kernel path.)
import ActorVmm
import EpollLoop
import Glibc
import Synchronization

final class HostThread {
    private var thread = pthread_t()
    private var joined = false
    private let work: HostThreadWork

    /// Starts `body` on a new thread, pinned to `cpu` first if given (a failed pin is reported by `join`).
    init(cpu: Int?, _ body: @escaping @Sendable () -> Void) throws(BenchError) {
        work = HostThreadWork(cpu: cpu, body: body)
        let context = Unmanaged.passRetained(work).toOpaque()
        let result = pthread_create(&thread, nil, hostThreadEntry, context)
        guard result == 0 else {
            Unmanaged<HostThreadWork>.fromOpaque(context).release()
            throw BenchError("pthread_create failed: \(result)")
        }
    }

    /// Waits for the thread to finish; throws if it could not be pinned.
    func join() throws(BenchError) {
        if !joined {
            joined = true
            pthread_join(thread, nil)
        }
        let error = work.pinError.load(ordering: .relaxed)
        if error != 0, let cpu = work.cpu { throw BenchError("cannot pin a thread to CPU \(cpu): errno \(error)") }
    }

    deinit { try? join() }
}

/// What the new thread runs: pin, then the body.
private final class HostThreadWork: Sendable {
    let cpu: Int?
    let body: @Sendable () -> Void
    let pinError = Atomic<Int32>(0)
    init(cpu: Int?, body: @escaping @Sendable () -> Void) { self.cpu = cpu; self.body = body }
}

/// The thread's entry point (a free function: no actor isolation, no captures).
private func hostThreadEntry(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    // SAFETY: `context` is the HostThreadWork retained by HostThread.init; released here.
    let work = Unmanaged<HostThreadWork>.fromOpaque(context!).takeRetainedValue()
    if let cpu = work.cpu {
        do throws(Errno) { try pinCurrentThread(to: cpu) } catch { work.pinError.store(max(1, error.rawValue), ordering: .relaxed) }
    }
    work.body()
    return nil
}
