import ActorVmm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// The benchmarks' timing hook on virtio devices: what it stamps, in which order, and that it keeps the most
/// recent events when the ring wraps.
@Suite struct VirtioEventRecorderTests {
    @Test func doorbellCompletionsAndInterruptInOrder() async throws {
        let loop = try EventLoop(name: "t-recorder")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        let recorder = VirtioEventRecorder(capacity: 16)
        await device.attach(recorder: recorder)
        try await device.watchDoorbells()

        // Two requests, one doorbell through the eventfd (what KVM_IOEVENTFD does on a guest write).
        var queue = driver.queues[0]
        queue.post([(queue.allocate(8), 8, writable: true)])
        queue.post([(queue.allocate(8), 8, writable: true)])
        EventFD.signalRaw(device.notifyFDs[0])
        var used: [(head: UInt32, length: UInt32)] = []
        for _ in 0..<400 where used.count < 2 {
            used += queue.takeUsed()
            if used.count < 2 { usleep(5000) }
        }
        await device.stop()

        #expect(used.count == 2)
        #expect(msi.triggers(1) == 1)
        let events = recorder.events()
        #expect(events.map(\.kind) == [.doorbell, .completed, .completed, .interrupt])
        #expect(events.map(\.queue) == [0, 0, 0, 1])  // the interrupt names its MSI-X vector
        #expect(zip(events, events.dropFirst()).allSatisfy { $0.tsc <= $1.tsc })
        #expect(recorder.recordedCount == 4)
    }

    @Test func keepsTheMostRecentEvents() {
        let recorder = VirtioEventRecorder(capacity: 10)
        #expect(recorder.capacity == 64)
        for queue in 0..<100 { recorder.record(.completed, queue: UInt16(queue)) }
        let events = recorder.events()
        #expect(recorder.recordedCount == 100)
        #expect(events.count == 64)
        #expect(events.first?.queue == 36 && events.last?.queue == 99)
    }
}
