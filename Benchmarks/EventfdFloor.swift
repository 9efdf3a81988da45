// Row 2's floors: an eventfd ping-pong between two host threads, placed like the vCPU thread and the
// device loop of the notify path.
//
// A (in the vCPU thread's place) reads the TSC, writes eventfd X, and blocks in read(2) on eventfd Y until B
// answers, then reads the TSC again: one round trip. B (in the device loop's place) waits for X to become
// readable, reads it, writes Y. B is either
// - a bare thread in epoll_wait (the kernel's floor: two wake-ups, two eventfd writes, two reads), or
// - an `EventLoop` with an fd handler on X (the same plus the loop's own dispatch: what the device path
//   uses, minus the actor, the virtqueue and KVM).
// B stamps the TSC when it wakes and after its write, so the JSON also has A's write → B's wake-up (one
// way) and B's own time.
import ActorVmm
import CKvm
import EpollLoop
import Glibc
import Synchronization

enum EventfdResponder: String, Sendable {
    case bareThread = "bare-thread"
    case eventLoop = "event-loop"
}

/// One floor run's samples, in nanoseconds.
struct EventfdSamples {
    var roundTrip: [Double] = []   // A: TSC before writing X → TSC after reading Y
    var oneWay: [Double] = []      // A's TSC before writing X → B awake
    var responder: [Double] = []   // B awake → B's write to Y returned
}

enum EventfdFloor {
    /// `warmup + count` round trips; A pinned to `vcpuCPU`, B to `loopCPU` (each if given).
    static func run(_ responder: EventfdResponder, vcpuCPU: Int?, loopCPU: Int?, count: Int, warmup: Int,
                    clock: TscClock) throws -> EventfdSamples {
        let request = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))   // X: B polls it
        let reply = eventfd(0, Int32(EFD_CLOEXEC))                      // Y: A blocks in read(2) on it
        guard request >= 0, reply >= 0 else { throw BenchError("eventfd: \(Errno.current)") }
        defer { close(request); close(reply) }
        let total = warmup + count
        let wakes = Mutex<[UInt64]>([]), dones = Mutex<[UInt64]>([])
        let stop = Atomic<Bool>(false)

        // B.
        var responderThread: HostThread?
        var loop: EventLoop?
        var registration: Registration?
        switch responder {
        case .bareThread:
            let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
            guard epoll >= 0 else { throw BenchError("epoll_create1: \(Errno.current)") }
            var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: 1))
            guard epoll_ctl(epoll, EPOLL_CTL_ADD, request, &event) == 0 else {
                close(epoll)
                throw BenchError("epoll_ctl: \(Errno.current)")
            }
            responderThread = try HostThread(cpu: loopCPU) {
                defer { close(epoll) }
                var wake = [UInt64](), done = [UInt64]()
                wake.reserveCapacity(total)
                done.reserveCapacity(total)
                var events = epoll_event()
                while true {
                    guard epoll_wait(epoll, &events, 1, -1) == 1 else { continue }
                    let awake = ckvm_rdtsc()
                    if stop.load(ordering: .acquiring) { break }
                    EventFD.drainRaw(request)
                    EventFD.signalRaw(reply)
                    let answered = ckvm_rdtsc()
                    wake.append(awake)
                    done.append(answered)
                }
                wakes.withLock { $0 = wake }
                dones.withLock { $0 = done }
            }
        case .eventLoop:
            let eventLoop = try Loops.make("bench-floor", cpu: loopCPU)
            loop = eventLoop
            do {
                registration = try eventLoop.register(fd: request) { _ in
                    let awake = ckvm_rdtsc()
                    EventFD.drainRaw(request)
                    EventFD.signalRaw(reply)
                    let answered = ckvm_rdtsc()
                    wakes.withLock { $0.append(awake) }
                    dones.withLock { $0.append(answered) }
                }
            } catch {
                eventLoop.shutdown()
                throw error
            }
        }

        // A (B is stopped whatever happens to A, so no thread is left waiting).
        let starts = Mutex<[UInt64]>([]), ends = Mutex<[UInt64]>([])
        let measured = Result { () throws(BenchError) in
            try HostThread(cpu: vcpuCPU) {
                var start = [UInt64](repeating: 0, count: total), end = [UInt64](repeating: 0, count: total)
                var value: UInt64 = 0
                for index in 0..<total {
                    start[index] = ckvm_rdtsc()
                    EventFD.signalRaw(request)
                    while read(reply, &value, 8) < 0 && errno == EINTR {}
                    end[index] = ckvm_rdtsc()
                }
                starts.withLock { $0 = start }
                ends.withLock { $0 = end }
            }.join()
        }

        // Stop B.
        if let responderThread {
            stop.store(true, ordering: .releasing)
            EventFD.signalRaw(request)
            try responderThread.join()
        }
        if let loop, let registration {
            loop.deregister(registration)
            loop.shutdown()
        }
        try measured.get()

        let start = starts.withLock { $0 }, end = ends.withLock { $0 }
        let wake = wakes.withLock { $0 }, done = dones.withLock { $0 }
        guard start.count == total, wake.count == total, done.count == total else {
            throw BenchError("eventfd ping-pong: \(start.count) requests, \(wake.count) answers, expected \(total)")
        }
        var samples = EventfdSamples()
        for index in warmup..<total {
            samples.roundTrip.append(clock.nanoseconds(end[index] &- start[index]))
            samples.oneWay.append(clock.nanoseconds(from: start[index], to: wake[index]))
            samples.responder.append(clock.nanoseconds(done[index] &- wake[index]))
        }
        return samples
    }
}
