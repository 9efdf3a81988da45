@testable import ActorVmm
import CKvm
import Boot
import EpollLoop
import Glibc
import Synchronization
import Testing

/// Counts writes on the vCPU thread (no actor): the guest's heartbeat.
final class CountingPort: RawBusDevice {
    let writes = Atomic<Int>(0)
    func read(offset: UInt64, width: Int) -> UInt64 { 0 }
    func write(offset: UInt64, width: Int, value: UInt64) { writes.add(1, ordering: .relaxed) }
}

/// Names of this process's threads and targets of its descriptors that belong to KVM.
func kvmResources() -> (threads: [String], fds: [String]) {
    func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
    let threads = list("/proc/self/task").compactMap { task -> String? in
        let fd = open("/proc/self/task/\(task)/comm", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = read(fd, &buffer, 32)
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: "\n") : nil
    }.filter { $0.hasPrefix("vcpu") || $0.hasPrefix("lifecycle") }
    let fds = list("/proc/self/fd").compactMap { fd -> String? in
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, 255)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }.filter { $0.contains("kvm") }
    return (threads, fds)
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let last = s.last, set.contains(last) { s = s.dropLast() }
        return String(s)
    }
}

func waitFor(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
    while !condition() {
        if monotonicNanoseconds() > deadline { return false }
        usleep(1000)
    }
    return true
}

@Suite(.enabled(if: Kvm.isAvailable, "needs /dev/kvm; skipped on this machine"), .serialized)
/// Every test here creates VMs, so the suite is serialized: the teardown census counts this process's KVM
/// descriptors and must see no other VM.
struct VcpuLifecycleTests {
    @Test func pauseResumeStopAndTeardownLeaveNothingBehind() async throws {
        let before = kvmResources()
        let port = CountingPort()
        do {
            // The guest: `1: out 0x80, al; jmp 1b` — a write per iteration.
            let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
            try memory.write(bytes: [0xE6, 0x80, 0xEB, 0xFC], at: GuestAddress(0x200000))
            try LongMode.writeStructures(to: memory)
            let kvm = try Kvm()
            let vm = try Vm(kvm: kvm, memory: memory)
            let vcpu = try vm.createVcpu(id: 0)
            try vcpu.setCPUID(try kvm.supportedCPUID())
            try vcpu.setBootState(LongMode.bootState(entry: 0x200000))
            let loop = try EventLoop(name: "lifecycle")
            let latch = StopLatch()
            let manager = VcpuManager(loop: loop, vcpus: [vcpu],
                                      buses: IoBuses(pio: try Bus().inserting(name: "count", base: 0x80, size: 1, .raw(port))),
                                      stopLatch: latch)
            try await manager.start()
            #expect(waitFor { port.writes.load(ordering: .relaxed) > 200 })
            #expect(kvmResources().threads.contains("vcpu0"))
            #expect(kvmResources().fds.count > before.fds.count, "the VM holds KVM descriptors while it runs")

            await manager.pause()
            let paused = port.writes.load(ordering: .relaxed)
            usleep(100_000)
            #expect(port.writes.load(ordering: .relaxed) == paused, "no exits while paused")
            #expect(await manager.state == .paused)

            await manager.resume()
            #expect(waitFor { port.writes.load(ordering: .relaxed) > paused + 200 }, "runs again after resume")

            await manager.stop()
            #expect(await manager.state == .stopped)
            #expect(latch.stopReason == nil, "stopping from the host is not a guest stop")
            loop.shutdown()
        }
        let after = kvmResources()
        #expect(after.threads == before.threads, "vCPU and loop threads are gone")
        #expect(after.fds == before.fds, "every KVM descriptor is closed")
    }

    @Test func msiRoutesAndIoeventfdsAreAccepted() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        let kvm = try Kvm()
        let vm = try Vm(kvm: kvm, memory: memory)
        let router = GsiRouter(vm: vm)
        let vectors = try router.allocate(count: 3)
        #expect(vectors.map(\.gsi) == [24, 25, 26])
        try GsiRouter.apply(msiRoutes: [24: (0xFEE0_0000, 0x41), 26: (0xFEE0_1000, 0x42)], vm: vm)
        let fd = try EventFD()
        try vm.registerIoeventfd(eventFD: fd.rawValue, address: 0xC000_3000, length: 0)
        vm.unregisterIoeventfd(eventFD: fd.rawValue, address: 0xC000_3000, length: 0)
    }

    /// Two devices on two loops route at once: the table KVM keeps last must hold both routes. The first
    /// install is held back until the second device has had the chance to install its own (up to 0.3 s);
    /// with the lock released before the ioctl the first device's older table was installed last.
    @Test func concurrentRoutesAreInstalledInOrder() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        let vm = try Vm(kvm: try Kvm(), memory: memory)
        let calls = Atomic<Int>(0)
        let installed = Mutex<[GsiRouter.MsiRoutes]>([])  // in the order the installs completed, as KVM sees them
        let router = GsiRouter(vm: vm) { routes throws(KvmError) in
            if calls.add(1, ordering: .relaxed).newValue == 1 {
                usleep(300_000)  // the first install: give the second device time to overtake it
            }
            installed.withLock { $0.append(routes) }
        }
        let vectors = try router.allocate(count: 2)
        let first = vectors[0], second = vectors[1]
        let started = ThreadParker()
        let thread = TestThread {
            started.signal()
            router.route(first, message: (0xFEE0_0000, 0x41))
        }
        started.wait()
        usleep(50_000)  // the first route is inside its install by now
        router.route(second, message: (0xFEE0_1000, 0x42))
        thread.join()
        let last = installed.withLock { $0.last! }
        #expect(last.keys.sorted() == [first.gsi, second.gsi], "the table installed last lost a route: \(last.keys.sorted())")
    }
}
