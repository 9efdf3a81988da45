@testable import ActorVmm
import Boot
import EpollLoop
import Glibc
import Synchronization
import Testing

/// RAM added at run time: `GuestMemory.append` and `Vm.addMemory`.
@Suite struct GuestMemoryHotplugTests {
    struct Refused: Error {}

    @Test func appendedRamIsUsableAndOnlyAboveTheRest() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20)])
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0x40_0000), count: 4)) {
            try memory.write(UInt32(1), at: GuestAddress(0x40_0000))
        }
        var slots: [Int] = []
        let region = try memory.append(start: GuestAddress(0x40_0000), size: 1 << 20) { (_, slot) throws(Refused) in slots.append(slot) }
        #expect(slots == [1] && region.start == GuestAddress(0x40_0000))
        try memory.write(UInt32(0xCAFE), at: GuestAddress(0x40_0000))
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x40_0000)) == 0xCAFE)
        #expect(memory.totalSize == 2 << 20 && memory.regions.count == 2)
        #expect(!memory.contains(GuestAddress(0x4F_FFFE), count: 4), "no access across the end")

        // Below or overlapping the existing RAM, misaligned: refused, nothing registered.
        for (start, size) in [(UInt64(0x10_0000), UInt64(1 << 20)), (0x48_0000, 1 << 20), (0x100_0001, 4096)] {
            #expect(throws: (any Error).self) {
                try memory.append(start: GuestAddress(start), size: size) { (_, _) throws(Refused) in Issue.record("registered") }
            }
        }
        // A registration that fails leaves the memory as it was.
        do {
            try memory.append(start: GuestAddress(0x100_0000), size: 1 << 20) { (_, _) throws(Refused) in throw Refused() }
            Issue.record("the append succeeded")
        } catch {
            guard case .register = error else { Issue.record("\(error)"); return }
        }
        #expect(memory.regions.count == 2 && !memory.contains(GuestAddress(0x100_0000), count: 1))
    }

    /// Readers on other threads (vCPUs, device loops) keep working while RAM is added.
    @Test func readersOnOtherThreadsSeeAConsistentList() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20)])
        try memory.write(UInt64(42), at: GuestAddress(0x1000))
        let stop = Atomic<Bool>(false), failures = Atomic<Int>(0), reads = Atomic<Int>(0)
        let readers = (0..<2).map { _ in
            TestThread {
                while !stop.load(ordering: .relaxed) {
                    if (try? memory.read(UInt64.self, at: GuestAddress(0x1000))) != 42 { failures.add(1, ordering: .relaxed) }
                    reads.add(1, ordering: .relaxed)
                }
            }
        }
        // The readers are running before RAM is added (on a loaded host a new thread may start late).
        while reads.load(ordering: .relaxed) < 2 { sched_yield() }
        for index in 1...32 {
            let start = GuestAddress(UInt64(index) << 21)
            try memory.append(start: start, size: 1 << 20) { (_, _) throws(Refused) in }
            try memory.write(UInt64(index), at: start)
        }
        stop.store(true, ordering: .relaxed)
        for reader in readers { reader.join() }
        #expect(failures.load(ordering: .relaxed) == 0 && reads.load(ordering: .relaxed) > 0)
        #expect(try (1...32).allSatisfy { try memory.read(UInt64.self, at: GuestAddress(UInt64($0) << 21)) == UInt64($0) })
    }
}

extension VcpuLifecycleTests {
    /// A KVM memory slot added after the VM was created: the guest writes into it.
    @Test func ramAddedAtRunTimeReachesTheGuest() async throws {
        let port = CountingPort()
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        // mov dword [0x2000000], 0x12345678; 1: out 0x80, al; jmp 1b
        try memory.write(bytes: [0xC7, 0x04, 0x25, 0x00, 0x00, 0x00, 0x02, 0x78, 0x56, 0x34, 0x12, 0xE6, 0x80, 0xEB, 0xFC],
                         at: GuestAddress(0x200000))
        try LongMode.writeStructures(to: memory)
        let kvm = try Kvm()
        let vm = try Vm(kvm: kvm, memory: memory)
        let region = try vm.addMemory(start: GuestAddress(0x200_0000), size: 2 << 20)
        #expect(region.start == GuestAddress(0x200_0000))
        #expect(throws: (any Error).self) { try vm.addMemory(start: GuestAddress(0x100_0000), size: 2 << 20) }
        let vcpu = try vm.createVcpu(id: 0)
        try vcpu.setCPUID(try kvm.supportedCPUID())
        try vcpu.setBootState(LongMode.bootState(entry: 0x200000))
        let loop = try EventLoop(name: "lifecycle")
        let manager = VcpuManager(loop: loop, vcpus: [vcpu],
                                  buses: IoBuses(pio: try Bus().inserting(name: "count", base: 0x80, size: 1, .raw(port))),
                                  stopLatch: StopLatch())
        try await manager.start()
        #expect(waitFor { port.writes.load(ordering: .relaxed) > 0 })
        await manager.stop()
        loop.shutdown()
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x200_0000)) == 0x1234_5678)
    }
}
