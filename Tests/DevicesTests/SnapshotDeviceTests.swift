import ActorVmm
@testable import Devices
import EpollLoop
import Glibc
import Synchronization
import Testing

/// Quiesce/resume and state capture/restore of the device actors (no KVM).
@Suite struct SnapshotDeviceTests {
    /// Posts one 16-byte receive buffer on the rng queue.
    func postRngRequest(_ driver: inout VirtioDriver) {
        var q = driver.queues[0]
        q.post([(q.allocate(16), 16, writable: true)])
        driver.queues[0] = q
    }

    @Test func aQuiescedDeviceServesNothingAndRemembersDoorbells() async throws {
        let loop = try EventLoop(name: "t-quiesce")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        try await device.watchDoorbells()
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 1) == 0xF)

        await device.quiesce()
        postRngRequest(&driver)
        EventFD.signalRaw(device.notifyFDs[0])  // the doorbell, as KVM's ioeventfd rings it
        usleep(100_000)
        #expect(driver.queues[0].takeUsed().isEmpty, "a quiesced device served a request")
        #expect(msi.triggers(1) == 0, "a quiesced device sent an interrupt")

        await device.resume()
        let used = driver.queues[0].takeUsed()
        #expect(used.count == 1 && used.first?.length == 16, "the doorbell rung while quiesced is served on resume")
        #expect(msi.triggers(1) == 1)
        await device.stop()
    }

    @Test func stateMovesToANewDeviceWhichContinuesTheQueue() async throws {
        let loop = try EventLoop(name: "t-restore")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (source, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: source, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        postRngRequest(&driver)
        await driver.kick(0)
        #expect(driver.queues[0].takeUsed().count == 1)
        // A request posted and not yet seen when the snapshot is taken.
        await source.quiesce()
        postRngRequest(&driver)
        let state = await source.captureState()
        await source.stop()

        let (target, targetMsi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        // The one queue's record is the 39 bytes before the backend's (empty) blob; its size comes first.
        var badQueue = state
        badQueue[state.count - 4 - 39] = 3  // a queue size that is not a power of 2
        await #expect(throws: SnapshotError.invalid("device 'test' queue 0: invalid queue configuration: size 3 is not a power of 2 up to 256")) {
            try await target.restoreState(badQueue)
        }
        #expect(await target.isActive == false, "a refused restore changed nothing")
        try await target.restoreState(state)
        #expect(await target.isActive)
        #expect(await target.isQuiesced)
        #expect(targetMsi.routes.withLock { $0.count } == 2, "MSI-X vectors are routed again in the new VM")
        #expect(await target.captureState() == state, "capture after restore gives the same state")
        await target.resume()
        let used = driver.queues[0].takeUsed()
        #expect(used.count == 1, "the request posted before the snapshot completes after restore")
        #expect(try memory.read(UInt16.self, at: GuestAddress(driver.queues[0].used.rawValue + 2)) == 2,
                "the used index continues from the snapshot")
        #expect(targetMsi.triggers(1) == 1)
        await target.stop()
    }

    @Test func restoreRefusesAnotherKindOfDeviceAndGarbage() async throws {
        let loop = try EventLoop(name: "t-refuse")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (rng, _) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        let state = await rng.captureState()
        let console = VirtioConsole(output: NullOutput(), inputFD: nil)
        let (other, _) = try makeDevice(console, memory: memory, loop: loop)
        await #expect(throws: SnapshotError.mismatch("device 'test' is virtio type 3, the snapshot has type 4")) {
            try await other.restoreState(state)
        }
        await #expect(throws: SnapshotError.self) { try await rng.restoreState(Array(state.dropLast(5))) }
    }

    @Test func uartStateRoundTripsAndQuiesceHoldsInput() async throws {
        let loop = try EventLoop(name: "t-uart")
        defer { loop.shutdown() }
        let uart = Uart8250(loop: loop, interrupt: NullInterrupt(), output: NullOutput())
        await uart.write(offset: 3, width: 1, value: 0x80)  // DLAB
        await uart.write(offset: 0, width: 1, value: 1)     // 115200 baud
        await uart.write(offset: 3, width: 1, value: 0x03)
        await uart.write(offset: 1, width: 1, value: 0x01)  // IER: received data
        await uart.write(offset: 7, width: 1, value: 0x5A)  // scratch
        await uart.enqueueInput(Array("hello".utf8))
        await uart.quiesce()
        #expect(await uart.inputSpace == 0, "quiesced, the UART takes no input")
        let state = await uart.captureState()

        let copy = Uart8250(loop: loop, interrupt: NullInterrupt(), output: NullOutput())
        try await copy.restoreState(state)
        await copy.resume()
        #expect(await copy.captureState() == state)
        #expect(await copy.read(offset: 7, width: 1) == 0x5A)
        #expect(await copy.read(offset: 1, width: 1) == 0x01)
        var received: [UInt8] = []
        while await copy.read(offset: 5, width: 1) & 1 != 0 { received.append(UInt8(await copy.read(offset: 0, width: 1))) }
        #expect(received == Array("hello".utf8), "the receive buffer travels with the snapshot")
        await #expect(throws: SnapshotError.self) { try await copy.restoreState(Array(state.prefix(4))) }
    }
}

final class NullOutput: SerialOutput {
    func write(_ bytes: UnsafeRawBufferPointer) {}
}

final class NullInterrupt: InterruptSink {
    func trigger() {}
}
