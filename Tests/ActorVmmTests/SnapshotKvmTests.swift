@testable import ActorVmm
import Boot
import CKvm
import EpollLoop
import Glibc
import Testing

/// Nested in VcpuLifecycleTests (serialized, needs /dev/kvm) so its VMs never overlap that suite's descriptor census.
extension VcpuLifecycleTests {
    /// vCPU and VM state capture and restore, and dirty-page logging, on /dev/kvm with a tiny guest.
    @Suite(.serialized)
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
            // rbx is stored before the RAM counter: a pause between the two stores leaves the copy one ahead.
            #expect(copy == counter || copy == counter + 1, "the register counter (rbx) continued too: \(copy) vs \(counter)")
            await target.manager.stop()
            target.loop.shutdown()
        }

        /// The whole path: pause (vCPUs, then devices), snapshot into a directory, restore into a new VM
        /// started parked, resume. A fake device checks it is quiesced around the capture.
        @Test func snapshotterRoundTripsThroughADirectory() async throws {
            let directory = "/tmp/actorvmm-snapdir-\(getpid())"
            defer {
                for file in [VmSnapshot.stateFileName, MemoryImage.fileName] { unlink(directory + "/" + file) }
                rmdir(directory)
            }
            let source = try Self.makeGuest(boot: true)
            let device = FakeDevice(loop: source.loop)
            let snapshotter = VmSnapshotter(vm: source.vm, manager: source.manager, devices: [device])
            try await source.manager.start()
            #expect(waitFor { source.port.writes.load(ordering: .relaxed) > 500 })
            await snapshotter.pause()
            #expect(await device.quiesced)
            try await snapshotter.snapshot(to: directory, config: Array("cfg".utf8))
            let saved = try source.memory.read(UInt64.self, at: Self.counter)
            await snapshotter.resume()
            #expect(await !device.quiesced)
            #expect(waitFor { (try? source.memory.read(UInt64.self, at: Self.counter)) ?? 0 > saved + 100 }, "the source runs on")
            await source.manager.stop()
            source.loop.shutdown()

            let snapshot = try VmSnapshot.read(from: directory)
            #expect(snapshot.config == Array("cfg".utf8) && snapshot.devices.map(\.id) == ["fake"])
            let target = try Self.makeGuest(boot: false)
            let restoredDevice = FakeDevice(loop: target.loop)
            let restorer = VmSnapshotter(vm: target.vm, manager: target.manager, devices: [restoredDevice])
            try await restorer.restore(snapshot, memoryFrom: directory)
            #expect(await restoredDevice.value == 42)
            try await target.manager.startParked()
            usleep(50_000)
            #expect(target.port.writes.load(ordering: .relaxed) == 0, "started parked: the guest does not run")
            #expect(try target.memory.read(UInt64.self, at: Self.counter) == saved)
            await restorer.resume()
            #expect(waitFor { target.port.writes.load(ordering: .relaxed) > 500 }, "runs after resume")
            await target.manager.stop()
            target.loop.shutdown()

            let wrong = try Self.makeGuest(boot: false)
            defer { wrong.loop.shutdown() }
            await #expect(throws: SnapshotError.missing("state for device 'other'")) {
                try await VmSnapshotter(vm: wrong.vm, manager: wrong.manager, devices: [FakeDevice(loop: wrong.loop, id: "other")])
                    .restore(snapshot, memoryFrom: nil)
            }
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
            // More may be reported than the guest wrote (safe for a migration: the page is sent again): in L1's
            // KVM (nested paging on QEMU's SVM) the code page is reported dirty too. Fewer would lose data.
            #expect(dirty.count < 16, "only pages the guest wrote: \(dirty.count)")
            let again = try guest.vm.fetchDirtyPages()
            #expect(again.count == 0, "nothing written while paused: \(again.pages)")
            try guest.vm.setDirtyLogging(false)
            await guest.manager.stop()
            guest.loop.shutdown()
            #expect(DirtyPages.all(of: guest.memory).count == 4096)
        }
    }
}

/// A device that records quiesce/resume and carries one byte of state.
actor FakeDevice: Snapshottable {
    nonisolated let loop: EventLoop
    nonisolated let snapshotID: String
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    var quiesced = false
    var value: UInt8 = 0

    init(loop: EventLoop, id: String = "fake") {
        self.loop = loop
        snapshotID = id
    }

    func quiesce() { quiesced = true; value = 42 }
    func resume() { quiesced = false }
    func captureState() -> [UInt8] { [value] }
    func restoreState(_ bytes: [UInt8]) throws(SnapshotError) {
        guard bytes.count == 1 else { throw .invalid("fake: \(bytes.count) bytes") }
        value = bytes[0]
        quiesced = true
    }
}
