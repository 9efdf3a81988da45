import Foundation
import Glibc
import Testing

/// PCI hotplug with Linux (docs/hotplug.md): the microVM kernel with Tests/Linux/hotplug.config
/// (CONFIG_HOTPLUG_PCI_ACPI) on this host, where guest user space cannot run, so everything is checked from
/// the kernel's side between the power button driver's probe and /init's death: a disk added with
/// add-disk is found by acpiphp in slot 1 and bound by virtio_blk (its size in dmesg), and remove-device
/// makes the kernel unbind it and run `_EJ0`, after which the VMM detaches it.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"),
       .enabled(if: LinuxHarness.selection != "0", "ACTOR_VMM_LINUX=0: Linux boots skipped"),
       .serialized)
struct LinuxPciHotplugTests {
    @Test(.timeLimit(.minutes(60)))
    func aDiskHotAddedAndRemovedByLinux() async throws {
        let kernel = try await Harness.offPool {
            try LinuxHarness.recipe("microvm-kernel.sh", [Harness.packageRoot + "/Tests/Linux/hotplug.config"])
        }
        let socket = NSTemporaryDirectory() + "actor-vmm-hotplug-pci-\(getpid()).sock"
        let disk = NSTemporaryDirectory() + "actor-vmm-hotplug-pci-\(getpid()).raw"
        defer { unlink(socket); unlink(disk) }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 4 << 20)))
        let results = LinuxHotplugTests.Results()
        let remote: @Sendable ([String]) -> Harness.Result = { arguments in
            Harness.run(Harness.remotePath, ["--api-socket", socket] + arguments, timeout: 60)
        }
        let run = try await Harness.offPool { LinuxHarness.oneAtATime { LinuxHarness.run([
            "--kernel", kernel + "/vmlinux", "--initramfs", kernel + "/initramfs.cpio",
            "--memory", "size=256M", "--serial", "tty", "--console", "off",
            "--cmdline", "console=ttyS0", "--api-socket", "path=\(socket)", "-v",
        ], until: "ACPI: button: Power Button [PWRB]", timeout: 1200) { session in
            defer { kill(session.pid, SIGTERM) }
            let added = remote(["add-disk", "path=\(disk),id=hot0"])
            results.set("add", added.stdout + added.stderr)
            guard session.waitForLine("[vda]", timeout: 300) else { return }
            results.set("info added", remote(["info"]).stdout)
            results.set("remove", "\(remote(["remove-device", "hot0"]).status)")
            let deadline = Date().addingTimeInterval(300)
            while Date() < deadline, remote(["info"]).stdout.contains("_virtio-pci-hot0") { usleep(500_000) }
            results.set("info removed", remote(["info"]).stdout)
        } } }
        let context = run.context
        #expect(results["add"] == #"{"id":"hot0","bdf":"0000:00:01.0"}"# + "\n", "\(context)")
        #expect(run.first(containing: "virtio_blk virtio0: [vda] 8192 512-byte logical blocks") != nil, "\(context)")
        #expect(results["info added"]?.contains("\"_virtio-pci-hot0\"") == true, "\(results["info added"] ?? "")")
        #expect(results["remove"] == "0", "\(context)")
        #expect(run.stderr.contains("'hot0' removed (the guest ejected it)"), "\(context)")
        #expect(results["info removed"]?.contains("hot0") == false, "\(results["info removed"] ?? "")")
        #expect(run.status == 0, "\(context)")
    }
}
