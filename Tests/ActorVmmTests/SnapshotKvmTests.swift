@testable import ActorVmm
import Boot
import CKvm
import EpollLoop
import Glibc
import Testing

/// vCPU and VM state capture and restore, and dirty-page logging, on /dev/kvm with a tiny guest.
@Suite(.enabled(if: Kvm.isAvailable, "needs /dev/kvm; skipped on this machine"), .serialized)
struct SnapshotKvmTests {
    static let entry: UInt64 = 0x200000
    static let counter = GuestAddress(0x300000)
    static let registerCopy = GuestAddress(0x300008)
    /// `1: inc rbx; mov [0x300008], rbx; mov rax, [0x300000]; inc rax; mov [0x300000], rax; out 0x80, al; jmp 1b`:
    /// one counter in RAM, one in a register (copied to RAM), a port write per iteration.
    static let code: [UInt8] = [
        0x48, 0xFF, 0xC3, 0x48, 0x89, 0x1C, 0x25, 0x08, 0x00, 0x30, 0x00,
        0x48, 0x8B, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0x48, 0xFF, 0xC0,
        0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0xE6, 0x80, 0xEB, 0xDE,
    ]

    struct Guest {
        let memory: GuestMemory
        let vm: Vm
        let vcpu: Vcpu
        let loop: EventLoop
        let manager: VcpuManager
        let port: CountingPort
    }

    /// A VM with the guest's memory either fresh (code loaded, boot state set) or left to the caller.
    static func makeGuest(boot: Bool) throws -> Guest {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        if boot {
            try memory.write(bytes: code, at: GuestAddress(entry))
            try LongMode.writeStructures(to: memory)
        }
        let kvm = try Kvm()
        let vm = try Vm(kvm: kvm, memory: memory)
        let vcpu = try vm.createVcpu(id: 0)
        try vcpu.configure(supportedCPUID: try kvm.supportedCPUID(), maxVcpus: 1)
        if boot { try vcpu.setBootState(LongMode.bootState(entry: entry)) }
        let loop = try EventLoop(name: "snapshot-test")
        let port = CountingPort()
        let manager = VcpuManager(loop: loop, vcpus: [vcpu],
                                  buses: IoBuses(pio: try Bus().inserting(name: "count", base: 0x80, size: 1, .raw(port))),
                                  stopLatch: StopLatch())
        return Guest(memory: memory, vm: vm, vcpu: vcpu, loop: loop, manager: manager, port: port)
    }

    @Test func stateSurvivesRestoreIntoANewVm() async throws {
        let path = "/tmp/actorvmm-snapkvm-\(getpid()).bin"
        defer { unlink(path) }
        let source = try Self.makeGuest(boot: true)
        try await source.manager.start()
        #expect(waitFor { (try? source.memory.read(UInt64.self, at: Self.counter)) ?? 0 > 1000 })
        await source.manager.pause()
        let xsaveSize = Int(source.vm.checkExtension(KVM_CAP_XSAVE2))
        let msrs = try source.vm.kvm.msrIndexList()
        let vcpuState = try source.vcpu.captureState(xsaveSize: xsaveSize, msrIndices: msrs)
        let vmState = try source.vm.captureState()
        let image = try MemoryImage.write(source.memory, to: path)
        let saved = try source.memory.read(UInt64.self, at: Self.counter)
        // Note which parts this host's KVM gave (kvm_pvm lacks some); the restore below must work anyway.
        let missing = VcpuState.Part.allCases.filter { vcpuState[$0] == nil }
        print("vcpu parts missing on this host: \(missing); \(try vcpuState.msrs.count) of \(msrs.count) MSRs read; PIT: \(vmState[.pit2] != nil)")
        await source.manager.stop()
        source.loop.shutdown()

        // Through the encoded form, as a snapshot file would carry it.
        let vcpuCopy = try VcpuState.decode(vcpuState.encode())
        let vmCopy = try VmKernelState.decode(vmState.encode())
        #expect(vcpuCopy == vcpuState && vmCopy == vmState)

        let target = try Self.makeGuest(boot: false)
        try image.read(into: target.memory, from: path)
        try target.vm.restoreState(vmCopy)
        try target.vcpu.restoreState(vcpuCopy)
        #expect(try target.memory.read(UInt64.self, at: Self.counter) == saved)
        try await target.manager.start()
        #expect(waitFor { target.port.writes.load(ordering: .relaxed) > 1000 }, "the restored guest runs")
        await target.manager.pause()
        let counter = try target.memory.read(UInt64.self, at: Self.counter)
        let copy = try target.memory.read(UInt64.self, at: Self.registerCopy)
        #expect(counter > saved + 1000, "the RAM counter continues from the snapshot (\(saved) → \(counter))")
        #expect(copy == counter, "the register counter (rbx) continued too: \(copy) vs \(counter)")
        await target.manager.stop()
        target.loop.shutdown()
    }

    @Test func restoreRefusesAnotherVcpusState() throws {
        let guest = try Self.makeGuest(boot: true)
        defer { guest.loop.shutdown() }
        var state = try guest.vcpu.captureState(xsaveSize: 0, msrIndices: [])
        state.id = 3
        #expect(throws: SnapshotError.mismatch("vcpu0 given the state of vcpu3")) { try guest.vcpu.restoreState(state) }
        state.id = 0
        state[.regs] = [1, 2, 3]
        #expect(throws: SnapshotError.invalid("vcpu0 KVM_SET_REGS: 3 bytes, expected \(MemoryLayout<kvm_regs>.size)")) {
            try guest.vcpu.restoreState(state)
        }
    }

    @Test func dirtyLogReportsPagesTheGuestWrites() async throws {
        let guest = try Self.makeGuest(boot: true)
        try guest.vm.setDirtyLogging(true)
        _ = try guest.vm.fetchDirtyPages()  // start a clean round
        try await guest.manager.start()
        #expect(waitFor { guest.port.writes.load(ordering: .relaxed) > 100 })
        await guest.manager.pause()
        let dirty = try guest.vm.fetchDirtyPages()
        let pages = dirty.pages.map(\.page)
        #expect(pages.contains(Int(Self.counter.rawValue / 4096)), "the counter's page is dirty: \(pages)")
        #expect(!pages.contains(Int(Self.entry / 4096)), "the code page was only read")
        #expect(dirty.count < 16, "only pages the guest wrote: \(dirty.count)")
        let again = try guest.vm.fetchDirtyPages()
        #expect(again.count == 0, "nothing written while paused: \(again.pages)")
        try guest.vm.setDirtyLogging(false)
        await guest.manager.stop()
        guest.loop.shutdown()
        #expect(DirtyPages.all(of: guest.memory).count == 4096)
    }
}
