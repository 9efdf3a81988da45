@testable import ActorVmm
import Boot
import CKvm
import EpollLoop
import Glibc
import Testing

/// vCPUs added and removed while the VM runs (part of the serialized `VcpuLifecycleTests`, whose census
/// must see no other VM).
extension VcpuLifecycleTests {
    @Test func vcpusAreAddedAndRemovedWhileTheVmRuns() async throws {
        let before = kvmResources()
        let port0 = CountingPort(), port1 = CountingPort()
        do {
            // vCPU 0: `1: out 0x80, al; jmp 1b`; vCPU 1 the same on port 0x81.
            let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
            try memory.write(bytes: [0xE6, 0x80, 0xEB, 0xFC], at: GuestAddress(0x200000))
            try memory.write(bytes: [0xE6, 0x81, 0xEB, 0xFC], at: GuestAddress(0x200010))
            try LongMode.writeStructures(to: memory)
            let kvm = try Kvm()
            let vm = try Vm(kvm: kvm, memory: memory)
            let supported = try kvm.supportedCPUID()
            let vcpu0 = try vm.createVcpu(id: 0)
            try vcpu0.configure(supportedCPUID: supported, maxVcpus: 2)
            try vcpu0.setBootState(LongMode.bootState(entry: 0x200000))
            let loop = try EventLoop(name: "lifecycle")
            let pio = try Bus().inserting(name: "port0", base: 0x80, size: 1, .raw(port0))
                .inserting(name: "port1", base: 0x81, size: 1, .raw(port1))
            let manager = VcpuManager(loop: loop, vcpus: [vcpu0], buses: IoBuses(pio: pio), stopLatch: StopLatch())
            let vcpu1 = try vm.createVcpu(id: 1)
            try vcpu1.configure(supportedCPUID: supported, maxVcpus: 2)
            try vcpu1.setBootState(LongMode.bootState(entry: 0x200010))
            // An application processor waits for INIT/SIPI; this one starts at once (KVM_SET_MP_STATE).
            var runnable = kvm_mp_state(mp_state: UInt32(KVM_MP_STATE_RUNNABLE))
            #expect(ckvm_ioctl_ptr(vcpu1.fd, CKVM_SET_MP_STATE, &runnable) == 0)
            await #expect(throws: VcpuHotplugError.notRunning) { try await manager.add(vcpu1) }

            try await manager.start()
            try await manager.add(vcpu1)
            #expect(manager.vcpuIDs == [0, 1])
            #expect(waitFor { port1.writes.load(ordering: .relaxed) > 200 }, "the added vCPU runs")
            #expect(kvmResources().threads.contains("vcpu1"))
            await #expect(throws: VcpuHotplugError.present(1)) { try await manager.add(vcpu1) }
            await #expect(throws: VcpuHotplugError.bootVcpu) { try await manager.remove(id: 0) }

            try await manager.remove(id: 1)
            #expect(manager.vcpuIDs == [0])
            #expect(waitFor { !kvmResources().threads.contains("vcpu1") }, "its thread ended")
            let stopped = port1.writes.load(ordering: .relaxed)
            let running = port0.writes.load(ordering: .relaxed)
            #expect(waitFor { port0.writes.load(ordering: .relaxed) > running + 200 }, "vCPU 0 goes on")
            #expect(port1.writes.load(ordering: .relaxed) == stopped, "the removed vCPU does not")
            await #expect(throws: VcpuHotplugError.absent(1)) { try await manager.remove(id: 1) }

            // Adding id 1 again reuses the vCPU KVM still holds.
            let again = try #require(await manager.takeRemovedVcpu(id: 1))
            #expect(again === vcpu1)
            try await manager.add(again)
            #expect(waitFor { port1.writes.load(ordering: .relaxed) > stopped + 200 }, "it runs again")
            #expect(manager.exitCounts().count == 2)

            await manager.stop()
            #expect(waitFor { !kvmResources().threads.contains("vcpu0") && !kvmResources().threads.contains("vcpu1") })
            loop.shutdown()
        }
        let after = kvmResources()
        #expect(after.threads == before.threads, "vCPU and loop threads are gone")
        #expect(after.fds == before.fds, "every KVM descriptor is closed, removed vCPUs' too")
    }
}
