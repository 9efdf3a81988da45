import Foundation
import Glibc
import Synchronization
import Testing

/// `--event-loops per-queue` (docs/devices.md "Queue workers") with the test guest: a two-queue disk and a
/// two-pair network device, each queue (pair) on a loop thread of its own, under the seccomp filters.
extension VirtioTests {
    /// The guest's blk, net, rng and console checks pass with `num_queues` > 1 under per-queue placement,
    /// and the VMM runs a `vmm-<id>-q<N>` thread per virtio-blk queue and virtio-net queue pair.
    @Test func guestDriversPassWithALoopPerQueue() throws {
        let prefix = NSTemporaryDirectory() + "actor-vmm-\(getpid())-per-queue"
        let diskA = prefix + "-a.raw", diskB = prefix + "-b.raw", consoleFile = prefix + "-console.txt"
        defer { for path in [diskA, diskB, consoleFile] { unlink(path) } }
        #expect(FileManager.default.createFile(atPath: diskA, contents: Data(count: Self.diskSize)))
        #expect(FileManager.default.createFile(atPath: diskB, contents: Self.readOnlyContents))
        let tap = "avm\(getpid() % 100_000)q"
        let peer = TapPeer(interface: tap)
        let threads = ThreadNames()
        let result = Harness.run(Harness.vmmPath, [
            "--kernel", Harness.guestPath, "--cmdline", "tests=pci,blk,rng,console,net",
            "--memory", "size=64M", "--serial", "tty", "--event-loops", "per-queue", "--cpus", "boot=2",
            "--disk", "path=\(diskA),num_queues=2", "--disk", "path=\(diskB),readonly=on", "--rng",
            "--console", "file=\(consoleFile)",
            "--net", "tap=\(tap),mac=\(Self.mac),ip=192.168.249.1,mask=255.255.255.0,num_queues=4",
        ], timeout: 180) { pid in
            peer.start()
            threads.watch(pid)
        }
        peer.stop()
        threads.stop()

        let context = "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)"
        #expect(result.status == 0 && !result.timedOut, "\(context)")
        try Self.expectEveryDevicePassed(lines: result.lines, diskA: diskA, diskB: diskB, console: consoleFile,
                                         readOnlyContents: Self.readOnlyContents, context: context)
        #expect(peer.sawGuestFrame, "no ACTORVMM-NET-TX frame on \(tap); injected \(peer.injected) frames")
        let seen = threads.names
        for name in ["vmm-_disk0", "vmm-_disk0-q0", "vmm-_disk0-q1", "vmm-_disk1-q0", "vmm-_net2-q0", "vmm-_net2-q1", "vmm-__rng"] {
            #expect(seen.contains(name), "no thread \(name) (saw \(seen.sorted()))")
        }
        #expect(!seen.contains("vmm-__rng-q0"), "virtio-rng has no queue worker")
    }
}

extension SnapshotEndToEndTests {
    /// A per-queue VM with a two-queue disk in use before and after: snapshotted (the queue workers stop,
    /// finish their rings' I/O and hand their queues back), restored in a new process (the config keeps
    /// `event_loops`: the restored VM has its queue loops too), its checks pass again and its ticks go on.
    @Test func aPerQueueGuestContinuesInANewProcess() throws {
        let directory = Self.temporaryDirectory("perqueue")
        let serial = directory + ".serial", console = directory + ".console", disk = directory + "-a.raw"
        unlink(serial)
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            for path in [serial, console, disk] { unlink(path) }
        }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: VirtioTests.diskSize)))
        let source = try VmmProcess(["--kernel", Harness.guestPath,
                                     "--cmdline", "tests=blk,console,snapcount,blk,console snap_ticks=30",
                                     "--memory", "size=64M", "--serial", "file=\(serial)", "--console", "file=\(console)",
                                     "--disk", "path=\(disk),num_queues=2", "--event-loops", "per-queue"])
        func output() -> String { (try? String(contentsOfFile: serial, encoding: .utf8)) ?? "" }
        #expect(Harness.eventually(30) { output().contains("TICK 5\n") }, "the guest ticks: \(output())")
        #expect(source.remote(["pause"]).status == 0)
        let snapshot = source.remote(["snapshot", "file://\(directory)"])
        #expect(snapshot.status == 0, "snapshot: \(snapshot.stderr)")
        #expect(source.remote(["shutdown-vmm"]).status == 0)
        #expect(source.waitForExit() == 0)

        let threads = ThreadNames()
        let restored = Harness.run(Harness.vmmPath, ["--restore", "source_url=file://\(directory),resume=on"], timeout: 120) { pid in
            threads.watch(pid)
        }
        threads.stop()
        #expect(restored.status == 0, "the restored VM ran to its end: \(restored.stderr)")
        let after = output()
        let ticks = after.split(separator: "\n").filter { $0.hasPrefix("TICK ") }.map { Int($0.dropFirst(5)) ?? -1 }
        #expect(ticks == Array(1...30), "ticks continue across the restore: \(ticks)")
        #expect(after.contains("TESTGUEST DONE pass=5 fail=0"), "virtio blk and console work on after the restore: \(after)")
        #expect(threads.names.contains("vmm-_disk0-q1"), "the restored VM has no queue loops: \(threads.names.sorted())")
    }

    /// Live migration of a per-queue VM with a two-queue disk in use (unix:): the destination carries on.
    @Test func aPerQueueGuestMigratesLive() throws {
        let base = Self.temporaryDirectory("perqueue-mig")
        let serial = base + ".serial", console = base + ".console", socket = base + ".sock", disk = base + "-a.raw"
        unlink(serial)
        defer { for path in [serial, console, disk] { unlink(path) } }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: VirtioTests.diskSize)))
        func output() -> String { (try? String(contentsOfFile: serial, encoding: .utf8)) ?? "" }
        func lastTick() -> Int { output().split(separator: "\n").filter { $0.hasPrefix("TICK ") }.compactMap { Int($0.dropFirst(5)) }.last ?? 0 }
        let source = try VmmProcess(["--kernel", Harness.guestPath,
                                     "--cmdline", "tests=blk,console,snapcount,blk,console snap_ticks=30 snap_period=1000000000",
                                     "--memory", "size=64M", "--serial", "file=\(serial)", "--console", "file=\(console)",
                                     "--disk", "path=\(disk),num_queues=2", "--event-loops", "per-queue"])
        let destination = try VmmProcess([])
        #expect(Harness.eventually(30) { lastTick() >= 3 }, "the guest ticks: \(output())")
        let destinationSocket = destination.socketPath
        let receiver = Thread {
            _ = Harness.run(Harness.remotePath, ["--api-socket", destinationSocket, "receive-migration", "unix:\(socket)"], timeout: 60)
        }
        receiver.start()
        var sent = source.remote(["send-migration", "unix:\(socket)"])
        for _ in 0..<100 where sent.status != 0 && sent.stderr.contains("cannot connect") {
            usleep(50_000)
            sent = source.remote(["send-migration", "unix:\(socket)"])
        }
        #expect(sent.status == 0, "send-migration: \(sent.stderr)")
        #expect(destination.waitForExit(timeout: 60) == 0, "the migrated guest ran to its end: \(destination.stderr)")
        let after = output()
        let ticks = after.split(separator: "\n").filter { $0.hasPrefix("TICK ") }.map { Int($0.dropFirst(5)) ?? -1 }
        #expect(ticks == Array(1...30), "ticks continue across the migration: \(ticks)")
        #expect(after.contains("TESTGUEST DONE pass=5 fail=0"), "virtio blk and console work on after the migration: \(after)")
        _ = source.remote(["shutdown-vmm"])
    }
}

/// The thread names of a process, gathered from /proc/PID/task every 20 ms from ``watch(_:)`` to ``stop()``.
final class ThreadNames: Sendable {
    private let state = Mutex<(names: Set<String>, running: Bool)>(([], true))

    var names: Set<String> { state.withLock { $0.names } }

    func watch(_ pid: Int32) {
        Thread { [self] in
            while state.withLock({ $0.running }) {
                let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
                for task in tasks {
                    guard let name = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8) else { continue }
                    let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
                    state.withLock { _ = $0.names.insert(trimmed) }
                }
                usleep(20_000)
            }
        }.start()
    }

    func stop() { state.withLock { $0.running = false } }
}

extension ApiGuestTests {
    /// A per-queue VM with a two-queue disk and a two-pair NIC created through the API: its device and
    /// queue loops run while it does, and a reboot, a shutdown and a delete leave no thread or descriptor of
    /// them behind.
    @Test func perQueueLoopsGoWithTheirMachine() throws {
        let kernel = Harness.writeTinyKernel("api-perqueue", code: [0x66, 0xBA, 0x00, 0x0A, 0xEE, 0xEB, 0xFD])
        let disk = "/tmp/actor-vmm-e2e-\(getpid())-perqueue.raw"
        defer { unlink(kernel); unlink(disk) }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20)))
        let vmm = try VmmProcess()
        let idle = vmm.openDescriptors()
        let config = Harness.vmConfig(kernel: kernel, memory: 16 << 20, extra: #"""
            , "disks": [{"path": "\#(disk)", "num_queues": 2}], "net": [{"num_queues": 4}], "actor_vmm": {"event_loops": "per-queue"}
            """#).replacingOccurrences(of: #""boot_vcpus": 1, "max_vcpus": 1"#, with: #""boot_vcpus": 2, "max_vcpus": 2"#)
        let created = vmm.call("PUT", "vm.create", body: config)
        #expect(created.status == 204, "\(created)")
        #expect(vmm.call("PUT", "vm.boot").status == 204)
        let queueLoops = ["vmm-_disk0-q0", "vmm-_disk0-q1", "vmm-_net1-q0", "vmm-_net1-q1"]
        #expect(Harness.eventually { queueLoops.allSatisfy(vmm.threadNames().contains) }, "\(vmm.threadNames())")
        let running = vmm.openDescriptors()
        #expect(vmm.call("PUT", "vm.reboot").status == 204)
        #expect(Harness.eventually(5) { vmm.openDescriptors() == running }, "old machine left open: \(vmm.openDescriptors())")
        #expect(vmm.threadNames().filter { $0.hasPrefix("vmm-_") }.count == 6, "\(vmm.threadNames())")
        #expect(vmm.remote(["shutdown"]).status == 0)
        #expect(Harness.eventually(5) { vmm.openDescriptors() == idle }, "a shut-down VM holds: \(vmm.openDescriptors())")
        #expect(!vmm.threadNames().contains { $0.hasPrefix("vmm-_") }, "\(vmm.threadNames())")
        #expect(vmm.remote(["delete"]).status == 0)
        #expect(vmm.remote(["shutdown-vmm"]).status == 0)
        #expect(vmm.waitForExit() == 0, "\(vmm.stderr)")
    }
}
