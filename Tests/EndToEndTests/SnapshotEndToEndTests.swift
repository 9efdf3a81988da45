import Foundation
import Glibc
import Synchronization
import Testing

/// Snapshot → restore into a new process with the test guest (docs/snapshot.md), and bad snapshots.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"), .serialized)
struct SnapshotEndToEndTests {
    static func temporaryDirectory(_ name: String) -> String {
        let path = "/tmp/actor-vmm-snap-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: path)
        return path
    }

    /// The guest counts in RAM and in a register and prints ticks; it is paused at tick ≥ 5, snapshotted, the
    /// VMM exits, and a new VMM restores it (`--restore …,resume=on`): the ticks go on from where they were
    /// (no TICK 1 again, no tick missing), the counters agree, and the guest finishes its check.
    @Test func aGuestContinuesInANewProcess() throws {
        let directory = Self.temporaryDirectory("dir")
        let serial = directory + ".serial"
        unlink(serial)
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            unlink(serial)
        }
        let console = directory + ".console", diskA = directory + "-a.raw", diskB = directory + "-b.raw"
        defer { for path in [console, diskA, diskB] { unlink(path) } }
        #expect(FileManager.default.createFile(atPath: diskA, contents: Data(count: VirtioTests.diskSize)))
        #expect(FileManager.default.createFile(atPath: diskB, contents: VirtioTests.readOnlyContents))
        // blk, rng and console run before (drivers set up, queues in use) and again after the restore.
        let source = try VmmProcess(["--kernel", Harness.guestPath,
                                     "--cmdline", "tests=blk,rng,console,snapcount,blk,rng,console snap_ticks=30",
                                     "--memory", "size=64M", "--serial", "file=\(serial)", "--rng", "--console", "file=\(console)",
                                     "--disk", "path=\(diskA)", "--disk", "path=\(diskB),readonly=on", "--event-loops", "per-device"])
        func output() -> String { (try? String(contentsOfFile: serial, encoding: .utf8)) ?? "" }
        #expect(Harness.eventually(30) { output().contains("TICK 5\n") }, "the guest ticks: \(output())")
        #expect(source.remote(["pause"]).status == 0)
        let snapshotResult = source.remote(["snapshot", "file://\(directory)"])
        #expect(snapshotResult.status == 0, "snapshot: \(snapshotResult.stderr)")
        #expect(try source.request("PUT", "vm.snapshot", body: "{\"destination_url\":\"file://\(directory)\"}").status == 204,
                "a second snapshot overwrites the first")
        let paused = output()
        #expect(source.remote(["shutdown-vmm"]).status == 0)
        #expect(source.waitForExit() == 0)
        let ticksBefore = paused.split(separator: "\n").filter { $0.hasPrefix("TICK ") }.count
        #expect(access(directory + "/state.bin", F_OK) == 0 && access(directory + "/memory.bin", F_OK) == 0)

        let restored = Harness.run(Harness.vmmPath, ["--restore", "source_url=file://\(directory),resume=on"], timeout: 120)
        #expect(restored.status == 0, "the restored VM ran to its end: \(restored.stderr)")
        let after = output()
        let ticks = after.split(separator: "\n").filter { $0.hasPrefix("TICK ") }.map { Int($0.dropFirst(5)) ?? -1 }
        #expect(ticks == Array(1...30), "ticks continue across the restore (\(ticksBefore) before): \(ticks)")
        #expect(after.components(separatedBy: "TESTGUEST START").count == 2, "the guest did not start over")
        #expect(after.contains("TEST snapcount PASS ticks=30"), "the guest's check passes after the restore: \(after)")
        #expect(after.contains("TESTGUEST DONE pass=7 fail=0"), "virtio blk, rng and console work on after the restore: \(after)")
    }

    /// Live migration between two processes over unix: and tcp: while the guest ticks (rng and console in
    /// use before and after; a tick every 1e9 TSC cycles, so that the guest is still running when the
    /// migration starts where starting processes is slow, as in the nested tier's L1): the destination
    /// carries on from the source's tick and finishes the check; the source has shut its VM down. Before
    /// that, a migration to a socket nobody listens on fails and leaves the source running.
    @Test(arguments: ["unix", "tcp"])
    func aGuestMigratesLiveToAnotherProcess(transport: String) throws {
        let serial = Self.temporaryDirectory("mig-\(transport)") + ".serial"
        let console = Self.temporaryDirectory("mig-\(transport)") + ".console"
        let socket = Self.temporaryDirectory("mig-\(transport)") + ".sock"
        let url = transport == "unix" ? "unix:\(socket)" : "tcp:127.0.0.1:\(20_000 + Int(getpid()) % 20_000)"
        unlink(serial)
        defer { unlink(serial); unlink(console) }
        func output() -> String { (try? String(contentsOfFile: serial, encoding: .utf8)) ?? "" }
        func lastTick() -> Int { output().split(separator: "\n").filter { $0.hasPrefix("TICK ") }.compactMap { Int($0.dropFirst(5)) }.last ?? 0 }
        let source = try VmmProcess(["--kernel", Harness.guestPath, "--cmdline", "tests=rng,console,snapcount,rng,console snap_ticks=30 snap_period=1000000000",
                                     "--memory", "size=64M", "--serial", "file=\(serial)", "--rng", "--console", "file=\(console)"])
        let destination = try VmmProcess([])
        #expect(Harness.eventually(30) { lastTick() >= 3 }, "the guest ticks: \(output())")

        let nobody = source.remote(["send-migration", url])
        #expect(nobody.status == 1 && nobody.stderr.contains("cannot connect to \(url)"), "\(nobody.stderr)")
        let tick = lastTick()
        #expect(Harness.eventually(10) { lastTick() > tick }, "the source runs on after a failed migration")

        let destinationSocket = destination.socketPath
        let receiver = Thread {
            _ = Harness.run(Harness.remotePath, ["--api-socket", destinationSocket, "receive-migration", url], timeout: 60)
        }
        receiver.start()
        var sent = source.remote(["send-migration", url])
        for _ in 0..<100 where sent.status != 0 && sent.stderr.contains("cannot connect") {  // until the destination listens
            usleep(50_000)
            sent = source.remote(["send-migration", url])
        }
        #expect(sent.status == 0, "send-migration: \(sent.stderr)")
        #expect(try source.request("GET", "vm.info").body.contains("\"state\":\"Shutdown\""), "the source's VM is shut down")
        #expect(destination.waitForExit(timeout: 60) == 0, "the migrated guest ran to its end: \(destination.stderr)")
        let after = output()
        let ticks = after.split(separator: "\n").filter { $0.hasPrefix("TICK ") }.map { Int($0.dropFirst(5)) ?? -1 }
        #expect(ticks == Array(1...30), "ticks continue across the migration: \(ticks)")
        #expect(after.contains("TEST snapcount PASS ticks=30"), "\(after)")
        #expect(after.contains("TESTGUEST DONE pass=5 fail=0"), "virtio rng and console work on after the migration: \(after)")
        _ = source.remote(["shutdown-vmm"])
    }

    /// A VMM waiting for a migration's source still stops on SIGTERM (the wait gives up, the request fails).
    @Test func aWaitingReceiverStillStops() throws {
        let socket = Self.temporaryDirectory("wait") + ".sock"
        let destination = try VmmProcess([])
        let destinationSocket = destination.socketPath
        let answer = Mutex<Harness.Result?>(nil)
        let receiver = Thread {
            let result = Harness.run(Harness.remotePath, ["--api-socket", destinationSocket, "receive-migration", "unix:\(socket)"], timeout: 60)
            answer.withLock { $0 = result }
        }
        receiver.start()
        #expect(Harness.eventually(10) { access(socket, F_OK) == 0 }, "the destination listens")
        kill(destination.pid, SIGTERM)
        #expect(destination.waitForExit(timeout: 10) != nil, "the VMM exits while a receive-migration waits")
        #expect(Harness.eventually(10) { answer.withLock { $0 != nil } })
        #expect(access(socket, F_OK) != 0, "the listening socket's file is removed")
    }

    @Test func badSnapshotsAreOneLineErrors() throws {
        let directory = Self.temporaryDirectory("bad")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var result = Harness.run(Harness.vmmPath, ["--restore", "source_url=file://\(directory)"], timeout: 30)
        #expect(result.status == 2)
        #expect(result.stderr.contains("cannot open snapshot \(directory)/state.bin: No such file or directory"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1)

        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: directory + "/state.bin", contents: Data("AVMSNAP\0\u{2}\0\0\0".utf8))
        result = Harness.run(Harness.vmmPath, ["--restore", "source_url=file://\(directory)"], timeout: 30)
        #expect(result.status == 2)
        #expect(result.stderr.contains("snapshot format version 2 is not supported (this build reads version 1)"), "\(result.stderr)")

        result = Harness.run(Harness.vmmPath, ["--restore", "source_url=/relative"], timeout: 30)
        #expect(result.status == 2 && result.stderr.contains("--restore source_url=/relative: expected source_url=file:///DIR"), "\(result.stderr)")

        let vmm = try VmmProcess(["--kernel", Harness.guestPath, "--cmdline", "tests=snapcount snap_ticks=1000", "--memory", "size=64M"])
        let running = try vmm.request("PUT", "vm.snapshot", body: "{\"destination_url\":\"file://\(directory)\"}")
        #expect(running.status == 405 && running.body.contains("the VM must be paused first"), "\(running.body)")
        #expect(try vmm.request("PUT", "vm.snapshot", body: "{\"destination\":\"x\"}").status == 400)
        let exists = try vmm.request("PUT", "vm.restore", body: "{\"source_url\":\"file://\(directory)\"}")
        #expect(exists.status == 409, "\(exists.body)")
        _ = vmm.remote(["shutdown-vmm"])
    }
}
