// Row 3's QD 1 floor as the device meets it: the least a device loop can do for one 4 KiB read when a
// doorbell wakes it. A host thread (placed like the vCPU) writes the doorbell eventfd and polls the
// interrupt eventfd without blocking (as the host-driver rows do); the loop thread (placed like the device
// loop), woken in epoll_wait through an EventLoop fd handler, reads the doorbell eventfd, preads the block
// and writes the interrupt eventfd. Timed on the loop thread from the handler's start to the write's return:
// the same window as a device row's doorbell -> interrupt, with nothing of the VMM in it. Against the hot
// pread floor (back-to-back calls) it shows what waking up costs the system calls themselves.
import ActorVmm
import CKvm
import EpollLoop
import Glibc
import Synchronization

enum BlkWokenFloor {
    /// Per doorbell, the TSC ticks from the handler's start to the interrupt write's return.
    static func run(image: String, doorbells: Int, driverCPU: Int?, loopCPU: Int?) throws -> [UInt64] {
        let file = open(image, O_RDWR | O_CLOEXEC)
        guard file >= 0 else { throw BenchError("cannot open \(image): \(Errno.current)") }
        let doorbell = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)), interrupt = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        defer {
            close(file)
            if doorbell >= 0 { close(doorbell) }
            if interrupt >= 0 { close(interrupt) }
        }
        guard doorbell >= 0, interrupt >= 0 else { throw BenchError("eventfd: \(Errno.current)") }
        let loop = try Loops.make("bench-floor-io", cpu: loopCPU)
        defer { loop.shutdown() }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlkBench.blockSize, alignment: 4096)
        defer { buffer.deallocate() }
        let address = UInt(bitPattern: buffer)
        let ticks = Mutex<[UInt64]>([])
        let served = Atomic<Int>(0)
        let registration = try loop.register(fd: doorbell) { _ in
            let start = ckvm_rdtsc()
            _ = EventFD.drainRaw(doorbell)
            let slot = served.load(ordering: .relaxed) % BlkBench.slots
            // SAFETY: `buffer` holds one block and outlives the loop (shut down before it is freed).
            let n = pread(file, UnsafeMutableRawPointer(bitPattern: address), BlkBench.blockSize, off_t(slot * BlkBench.blockSize))
            EventFD.signalRaw(interrupt, n == BlkBench.blockSize ? 1 : 2)
            let end = ckvm_rdtsc()
            ticks.withLock { $0.append(end &- start) }
            served.add(1, ordering: .releasing)
        }
        defer { loop.deregister(registration) }
        let failure = Mutex<String?>(nil)
        try HostThread(cpu: driverCPU) {
            for index in 0..<doorbells {
                EventFD.signalRaw(doorbell)
                var value: UInt64 = 0, spins = 0
                while true {
                    value = EventFD.drainRaw(interrupt)
                    if value != 0 { break }
                    spins += 1
                    if spins > 20_000_000 { failure.withLock { $0 = "doorbell \(index): no answer" }; return }
                    if spins % 64 == 0 { sched_yield() }
                }
                if value != 1 { failure.withLock { $0 = "doorbell \(index): pread failed" }; return }
            }
        }.join()
        if let failure = failure.withLock({ $0 }) { throw BenchError("woken pread floor: \(failure)") }
        let all = ticks.withLock { $0 }
        guard all.count == doorbells else { throw BenchError("woken pread floor: \(all.count) answers, expected \(doorbells)") }
        return all
    }
}
