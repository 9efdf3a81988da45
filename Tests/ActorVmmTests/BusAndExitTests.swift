@testable import ActorVmm
import CKvm
import EpollLoop
import Synchronization
import Testing

/// A register file actor: reads return the last written value plus the offset.
actor EchoDevice: BusDevice {
    nonisolated let loop: EventLoop
    var last: UInt64 = 0
    var accesses = 0
    init(loop: EventLoop) { self.loop = loop }
    func read(offset: UInt64, width: Int) -> UInt64 { accesses += 1; return last &+ offset }
    func write(offset: UInt64, width: Int, value: UInt64) { accesses += 1; last = value }
}

@Suite struct BusTests {
    @Test func lookupFindsRangesAndOffsets() throws {
        let loop = try EventLoop(name: "test-bus")
        defer { loop.shutdown() }
        let device = EchoDevice(loop: loop)
        let bus = try Bus()
            .inserting(name: "b", base: 0x100, size: 0x10, .device(device))
            .inserting(name: "a", base: 0x10, size: 8, .device(device))
            .inserting(name: "c", base: UInt64.max - 7, size: 8, .device(device))
        #expect(bus.entries.map(\.name) == ["a", "b", "c"])
        #expect(bus.lookup(0x10)?.offset == 0)
        #expect(bus.lookup(0x17)?.entry.name == "a")
        #expect(bus.lookup(0x18) == nil)
        #expect(bus.lookup(0x0) == nil)
        #expect(bus.lookup(0x10F)?.offset == 0xF)
        #expect(bus.lookup(UInt64.max)?.entry.name == "c")
    }

    @Test func overlappingAndEmptyRangesAreRejected() throws {
        let loop = try EventLoop(name: "test-bus2")
        defer { loop.shutdown() }
        let device = EchoDevice(loop: loop)
        let bus = try Bus().inserting(name: "a", base: 0x10, size: 8, .device(device))
        #expect(throws: BusError.overlap(name: "x", base: 0x17, other: "a")) {
            try bus.inserting(name: "x", base: 0x17, size: 1, .device(device))
        }
        #expect(throws: BusError.overlap(name: "y", base: 0x8, other: "a")) {
            try bus.inserting(name: "y", base: 0x8, size: 9, .device(device))
        }
        #expect(throws: BusError.self) { try bus.inserting(name: "z", base: 0x100, size: 0, .device(device)) }
        #expect(throws: BusError.self) { try bus.inserting(name: "w", base: UInt64.max, size: 2, .device(device)) }
    }
}

@Suite struct ExitHandoffTests {
    /// Every strategy reaches the actor and returns its reply, with the loop idle or busy.
    @Test(arguments: HandoffStrategy.allCases)
    func everyStrategyDeliversAccessesInOrder(strategy: HandoffStrategy) async throws {
        let loop = try EventLoop(name: "test-handoff")
        defer { loop.shutdown() }
        let device = EchoDevice(loop: loop)
        let handoff = ExitHandoff(strategy: strategy)
        // Run the accesses on a plain thread, as a vCPU would.
        let ok = Atomic<Bool>(true)
        let done = Atomic<Bool>(false)
        let thread = TestThread {
            for i in 0..<500 {
                handoff.write(.device(device), offset: 0, width: 4, value: UInt64(i))
                if handoff.read(.device(device), offset: 3, width: 4) != UInt64(i + 3) { ok.store(false, ordering: .relaxed) }
            }
            done.store(true, ordering: .releasing)
        }
        // Keep the loop busy at times so the inline path must fall back to enqueue-and-wait.
        for _ in 0..<20 { loop.execute { for _ in 0..<1000 { _ = monotonicNanoseconds() } } }
        // Poll instead of blocking: the `task` strategy needs a free thread in Swift's cooperative pool,
        // which is where this test itself runs.
        while !done.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(1)) }
        thread.join()
        let allMatched = ok.load(ordering: .relaxed)
        #expect(allMatched)
        #expect(await device.accesses == 1000)
    }
}

/// A pthread running a closure (vCPU threads are pthreads, not tasks).
final class TestThread: Sendable {
    let thread: pthread_t
    init(_ body: @escaping @Sendable () -> Void) {
        final class Box: Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        var t = pthread_t()
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(&t, nil, { arg in
            let box = Unmanaged<AnyObject>.fromOpaque(arg!).takeRetainedValue() as! Box
            box.body()
            return nil
        }, context)
        thread = t
    }
    func join() { pthread_join(thread, nil) }
}

@Suite struct HandleExitTests {
    /// A fake kvm_run page for driving `handleExit` without KVM.
    final class FakeRun {
        let size = 4096
        let page: UnsafeMutableRawPointer
        var run: UnsafeMutablePointer<kvm_run> { page.bindMemory(to: kvm_run.self, capacity: 1) }
        init() { page = .allocate(byteCount: size, alignment: 4096); page.initializeMemory(as: UInt8.self, repeating: 0, count: size) }
        deinit { page.deallocate() }

        func pio(port: UInt16, out: Bool, size: UInt8, count: UInt32, data: [UInt8]) {
            run.pointee.exit_reason = UInt32(KVM_EXIT_IO)
            run.pointee.io.direction = UInt8(out ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN)
            run.pointee.io.size = size
            run.pointee.io.port = port
            run.pointee.io.count = count
            run.pointee.io.data_offset = 1024
            for (i, b) in data.enumerated() { page.storeBytes(of: b, toByteOffset: 1024 + i, as: UInt8.self) }
        }
        func data(_ n: Int) -> [UInt8] { (0..<n).map { page.load(fromByteOffset: 1024 + $0, as: UInt8.self) } }

        func mmio(address: UInt64, write: Bool, length: UInt32, data: [UInt8]) {
            run.pointee.exit_reason = UInt32(KVM_EXIT_MMIO)
            run.pointee.mmio.phys_addr = address
            run.pointee.mmio.len = length
            run.pointee.mmio.is_write = write ? 1 : 0
            withUnsafeMutableBytes(of: &run.pointee.mmio.data) { bytes in
                for i in 0..<8 { bytes[i] = i < data.count ? data[i] : 0 }
            }
        }
        var mmioData: [UInt8] { withUnsafeBytes(of: run.pointee.mmio.data) { Array($0) } }
    }

    /// Records every access; reads return 0x80 + the offset in every byte.
    final class RecordingDevice: RawBusDevice {
        let log = Mutex<[(offset: UInt64, width: Int, value: UInt64?)]>([])
        func read(offset: UInt64, width: Int) -> UInt64 {
            log.withLock { $0.append((offset, width, nil)) }
            return (0..<width).reduce(0) { $0 | (0x80 + offset) << (8 * UInt64($1)) }
        }
        func write(offset: UInt64, width: Int, value: UInt64) { log.withLock { $0.append((offset, width, value)) } }
    }

    /// An MMIO access KVM split at a page boundary (3 or 7 bytes, say) is done as naturally aligned 1-,
    /// 2- and 4-byte pieces, in address order, and the VM goes on.
    @Test func oddLengthMmioIsSplitIntoAlignedPieces() throws {
        let device = RecordingDevice()
        let buses = IoBuses(mmio: try Bus().inserting(name: "rec", base: 0x1000, size: 0x10, .raw(device)))
        let fake = FakeRun()
        let handoff = ExitHandoff()
        fake.mmio(address: 0x1001, write: true, length: 7, data: [1, 2, 3, 4, 5, 6, 7])
        #expect(handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 0 }) == .resume)
        fake.mmio(address: 0x1000, write: false, length: 3, data: [])
        #expect(handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 0 }) == .resume)
        #expect(Array(fake.mmioData.prefix(3)) == [0x80, 0x80, 0x82])
        // Five bytes at 0x100E: two in the device, three past its end (unclaimed: all-ones, no call).
        fake.mmio(address: 0x100E, write: false, length: 5, data: [])
        #expect(handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 0 }) == .resume)
        #expect(Array(fake.mmioData.prefix(5)) == [0x8E, 0x8E, 0xFF, 0xFF, 0xFF])
        let log = device.log.withLock { $0 }
        #expect(log.map { $0.offset } == [1, 2, 4, 0, 2, 0xE])
        #expect(log.map { $0.width } == [1, 2, 4, 2, 1, 2])
        #expect(log.map { $0.value } == [0x01, 0x0302, 0x0706_0504, nil, nil, nil])
        // Lengths KVM never produces still stop the VM.
        fake.mmio(address: 0x1000, write: true, length: 9, data: [])
        #expect(handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 5 })
                == .stop(.unhandledExit(reason: "KVM_EXIT_MMIO with length 9", rip: 5)))
    }

    @Test func pioInOutAndStringOps() throws {
        let loop = try EventLoop(name: "test-exit")
        defer { loop.shutdown() }
        let device = EchoDevice(loop: loop)
        let buses = IoBuses(pio: try Bus().inserting(name: "echo", base: 0x100, size: 8, .device(device)))
        let fake = FakeRun()
        let handoff = ExitHandoff()
        fake.pio(port: 0x100, out: true, size: 2, count: 1, data: [0x34, 0x12])
        #expect(handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 0 }) == .resume)
        fake.pio(port: 0x102, out: false, size: 2, count: 1, data: [0, 0])
        #expect(handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 0 }) == .resume)
        #expect(fake.data(2) == [0x36, 0x12])
        // `rep insb` with count 3: three reads.
        fake.pio(port: 0x101, out: false, size: 1, count: 3, data: [0, 0, 0])
        _ = handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 0 })
        #expect(fake.data(3) == [0x35, 0x35, 0x35])
        // Unclaimed ports read all-ones.
        fake.pio(port: 0x300, out: false, size: 4, count: 1, data: [0, 0, 0, 0])
        _ = handleExit(fake.run, runSize: fake.size, buses: buses, handoff: handoff, rip: { 0 })
        #expect(fake.data(4) == [0xFF, 0xFF, 0xFF, 0xFF])
    }

    @Test func malformedAndFatalExitsStopTheVm() throws {
        let fake = FakeRun()
        let handoff = ExitHandoff()
        fake.pio(port: 0x100, out: true, size: 3, count: 1, data: [])
        #expect(handleExit(fake.run, runSize: fake.size, buses: IoBuses(), handoff: handoff, rip: { 0x1234 })
                == .stop(.unhandledExit(reason: "KVM_EXIT_IO with size 3 count 1", rip: 0x1234)))
        fake.pio(port: 0x100, out: true, size: 4, count: 1000, data: [])
        if case .stop = handleExit(fake.run, runSize: fake.size, buses: IoBuses(), handoff: handoff, rip: { 0 }) {} else {
            Issue.record("a data range past the kvm_run page must stop the VM")
        }
        fake.run.pointee.exit_reason = UInt32(KVM_EXIT_SHUTDOWN)
        #expect(handleExit(fake.run, runSize: fake.size, buses: IoBuses(), handoff: handoff, rip: { 0x42 })
                == .stop(.tripleFault(rip: 0x42)))
        fake.run.pointee.exit_reason = 9999
        #expect(handleExit(fake.run, runSize: fake.size, buses: IoBuses(), handoff: handoff, rip: { 7 })
                == .stop(.unhandledExit(reason: "exit reason 9999", rip: 7)))
        #expect(VmStopReason.tripleFault(rip: 0x42).exitCode == 1 && VmStopReason.poweredOff.exitCode == 0)
    }
}
