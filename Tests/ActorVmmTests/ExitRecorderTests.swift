@testable import ActorVmm
import CKvm
import EpollLoop
import Glibc
import Testing

@Suite struct ExitRecorderTests {
    /// A fake `kvm_run` page describing one exit.
    func page(_ body: (inout kvm_run) -> Void) -> UnsafeMutablePointer<kvm_run> {
        let run = UnsafeMutablePointer<kvm_run>.allocate(capacity: 1)
        run.initialize(to: kvm_run())
        body(&run.pointee)
        return run
    }

    @Test func keysDescribePioMmioAndOtherExits() {
        let out = page { $0.exit_reason = UInt32(KVM_EXIT_IO); $0.io.direction = UInt8(KVM_EXIT_IO_OUT); $0.io.port = 0xA08 }
        let read = page { $0.exit_reason = UInt32(KVM_EXIT_MMIO); $0.mmio.is_write = 0; $0.mmio.phys_addr = 0xFEA0_0008 }
        let halt = page { $0.exit_reason = UInt32(KVM_EXIT_HLT) }
        defer { out.deallocate(); read.deallocate(); halt.deallocate() }

        #expect(ExitKey(out) == ExitKey(kind: .pio, isWrite: true, address: 0xA08))
        #expect(ExitKey(out).kind == .pio && ExitKey(out).isWrite && ExitKey(out).address == 0xA08)
        #expect(ExitKey(read) == ExitKey(kind: .mmio, isWrite: false, address: 0xFEA0_0008))
        #expect(!ExitKey(read).isWrite)
        #expect(ExitKey(halt).kind == .other && ExitKey(halt).address == UInt64(KVM_EXIT_HLT))
    }

    @Test func theRingKeepsTheMostRecentExitsInOrder() {
        let recorder = ExitRecorder(capacity: 64)
        #expect(recorder.capacity == 64)
        let run = page { $0.exit_reason = UInt32(KVM_EXIT_IO); $0.io.port = 0x80 }
        defer { run.deallocate() }
        for tick in 0..<100 as Range<UInt64> {
            recorder.record(exitTSC: tick * 10, doneTSC: tick * 10 + 1, run: run)
        }
        let samples = recorder.samples()
        #expect(recorder.recordedCount == 100)
        #expect(samples.count == 64)
        #expect(samples.first?.exitTSC == 360 && samples.last?.exitTSC == 990)
        #expect(zip(samples, samples.dropFirst()).allSatisfy { $0.exitTSC < $1.exitTSC })
        #expect(samples.allSatisfy { $0.doneTSC == $0.exitTSC + 1 && $0.key.address == 0x80 })
    }

    @Test func capacityRoundsUpToAPowerOfTwo() {
        #expect(ExitRecorder(capacity: 1).capacity == 64)
        #expect(ExitRecorder(capacity: 65).capacity == 128)
        #expect(ExitRecorder(capacity: 5000).samples().isEmpty)
    }
}

@Suite struct SlowPathCountTests {
    /// Only accesses that go through the device loop are counted: none inline on an idle loop, all of
    /// them with enqueue-and-wait.
    @Test func countsAccessesThatWentThroughTheLoop() throws {
        let loop = try EventLoop(name: "test-slowpath")
        defer { loop.shutdown() }
        let device = EchoDevice(loop: loop)
        let inline = ExitHandoff(strategy: .inlineIfIdle)
        let enqueue = ExitHandoff(strategy: .enqueueAndWait)
        usleep(20_000)  // let the new loop thread go to sleep: nothing else wakes it
        for value in 0..<10 as Range<UInt64> {
            inline.write(.device(device), offset: 0, width: 4, value: value)
            #expect(inline.read(.device(device), offset: 0, width: 4) == value)
        }
        // (Not interleaved: right after an enqueued access the loop thread may still hold its claim, and
        // an inline access then rightly takes the slow path.)
        for value in 0..<10 as Range<UInt64> {
            enqueue.write(.device(device), offset: 0, width: 4, value: value)
            #expect(enqueue.read(.device(device), offset: 0, width: 4) == value)
        }
        #expect(inline.slowPathAccesses.load(ordering: .relaxed) == 0)
        #expect(enqueue.slowPathAccesses.load(ordering: .relaxed) == 20)
    }
}
