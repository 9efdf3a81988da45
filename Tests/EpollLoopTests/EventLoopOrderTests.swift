import EpollLoop
import Glibc
import Synchronization
import Testing

/// Work queued on a loop before one of its descriptors became ready runs before that descriptor's handler
/// (queue workers rely on it: a device's message — a masked vector, BME cleared — sent before the guest's
/// doorbell must reach the worker before the doorbell does; docs/devices.md "Queue workers").
@Suite struct EventLoopOrderTests {
    @Test func workQueuedBeforeADescriptorIsReadyRunsFirst() throws {
        let loop = try EventLoop(name: "t-order")
        defer { loop.shutdown() }
        let event = try EventFD()
        let fd = event.rawValue
        let order = Mutex<[String]>([])
        let registration = try loop.register(fd: fd) { _ in
            EventFD.drainRaw(fd)
            order.withLock { $0.append("fd") }
        }
        // Hold the loop in a timer handler: after its queued work, before it waits for descriptors.
        let inTimer = ThreadParker(), release = ThreadParker()
        loop.schedule(after: .zero) {
            inTimer.signal()
            release.wait()
        }
        inTimer.wait()
        loop.execute { order.withLock { $0.append("job") } }  // the loop is not asleep: no wake-up written
        EventFD.signalRaw(fd)
        release.signal()
        for _ in 0..<400 where order.withLock({ $0.count }) < 2 { usleep(5_000) }
        #expect(order.withLock { $0 } == ["job", "fd"])
        loop.deregister(registration)
    }
}
