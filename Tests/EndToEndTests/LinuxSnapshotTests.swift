import Foundation
import Glibc
import Testing

/// Linux snapshotted mid-boot and restored into a new process (docs/snapshot.md). Slow on an emulating host
/// (the boot alone takes minutes), so only with `ACTOR_VMM_LINUX_SNAPSHOT=1`.
@Suite(.enabled(if: Harness.kvmAvailable && ProcessInfo.processInfo.environment["ACTOR_VMM_LINUX_SNAPSHOT"] == "1",
                "set ACTOR_VMM_LINUX_SNAPSHOT=1 (and have /dev/kvm) to run the Linux snapshot check"))
struct LinuxSnapshotTests {
    /// The microVM kernel with a disk and rng, paused once it frees its init memory, snapshotted; a new VMM
    /// restores it and the kernel goes on to start /init (where an emulating host stops, docs/boot.md).
    @Test(.timeLimit(.minutes(30)))
    func linuxContinuesAfterARestore() async throws {
        let kernel = try await Harness.offPool { try LinuxHarness.recipe("microvm-kernel.sh") }
        let prefix = "/tmp/actor-vmm-linux-snap-\(getpid())"
        let serial = prefix + ".serial", disk = prefix + ".raw", directory = prefix + ".dir"
        defer {
            for path in [serial, disk] { unlink(path) }
            try? FileManager.default.removeItem(atPath: directory)
        }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 8 << 20)))
        @Sendable func output() -> String { (try? String(contentsOfFile: serial, encoding: .utf8)) ?? "" }
        try await Harness.offPool {
            try LinuxHarness.oneAtATime {
                let source = try VmmProcess(["--kernel", kernel + "/vmlinux", "--initramfs", kernel + "/initramfs.cpio",
                                             "--memory", "size=512M", "--serial", "file=\(serial)", "--console", "off",
                                             "--disk", "path=\(disk)", "--rng", "--cmdline", "console=ttyS0"])
                #expect(Harness.eventually(900) { output().contains("Freeing unused kernel image (initmem)") }, "\(output())")
                #expect(source.remote(["pause"]).status == 0)
                #expect(source.remote(["snapshot", "file://\(directory)"]).status == 0)
                #expect(source.remote(["shutdown-vmm"]).status == 0)
                _ = source.waitForExit()
                let before = output()
                #expect(!before.contains("Run /init"), "the snapshot was taken before /init")

                let restored = try VmmProcess(["--restore", "source_url=file://\(directory),resume=on"])
                #expect(Harness.eventually(600) { output().contains("Run /init as init process") },
                        "the restored kernel goes on to /init: \(output().suffix(2000))")
                let after = String(output().dropFirst(before.count))
                #expect(!after.contains("Linux version"), "the kernel did not boot again: \(after.prefix(500))")
                kill(restored.pid, SIGTERM)
                _ = restored.waitForExit()
            }
        }
    }
}
