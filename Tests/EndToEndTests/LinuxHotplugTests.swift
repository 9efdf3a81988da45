import Foundation
import Glibc
import Synchronization
import Testing

/// The power button and CPU hotplug with the microVM Linux kernel (docs/hotplug.md). On this project's
/// hosts guest user space cannot run (kvm_pvm, docs/compat.md): /init dies a few minutes into the boot and
/// the kernel panics, so everything happens between the power button driver's probe and that panic, and is
/// checked from the kernel's side: its `_EVT` reads the GED's event byte (the VMM counts the read), it
/// hot-adds the CPU ("CPU1 has been hot-added"), and it ejects the CPU the host asks back (the VMM ends
/// that vCPU's thread). What user space does with the button (acpid) needs hardware KVM or the nested tier.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"),
       .enabled(if: LinuxHarness.selection != "0", "ACTOR_VMM_LINUX=0: Linux boots skipped"),
       .serialized)
struct LinuxHotplugTests {
    /// What the run's `then` saw, for the checks after it.
    final class Results: Sendable {
        let values = Mutex<[String: String]>([:])
        subscript(key: String) -> String? { values.withLock { $0[key] } }
        func set(_ key: String, _ value: String) { values.withLock { $0[key] = value } }
    }

    @Test(.timeLimit(.minutes(30)))
    func powerButtonAndCpuHotplugReachTheKernel() async throws {
        let kernel = try await Harness.offPool { try LinuxHarness.recipe("microvm-kernel.sh") }
        let socket = NSTemporaryDirectory() + "actor-vmm-hotplug-\(getpid()).sock"
        defer { unlink(socket) }
        let results = Results()
        let remote: @Sendable ([String]) -> Harness.Result = { arguments in
            Harness.run(Harness.remotePath, ["--api-socket", socket] + arguments, timeout: 60)
        }
        let run = try await Harness.offPool { LinuxHarness.oneAtATime { LinuxHarness.run([
            "--kernel", kernel + "/vmlinux", "--initramfs", kernel + "/initramfs.cpio",
            "--cpus", "boot=1,max=2", "--memory", "size=256M", "--serial", "tty", "--console", "off",
            "--cmdline", "console=ttyS0", "--api-socket", "path=\(socket)", "-v",
        ], until: "ACPI: button: Power Button [PWRB]", timeout: 1200) { session in
            defer { kill(session.pid, SIGTERM) }
            results.set("button", "\(remote(["power-button"]).status)")
            // The guest's _EVT reads the event byte once: the VMM counts that read.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let counters = remote(["counters"]).stdout
                if counters.contains("\"acpi-ged\":{\"requests\":1") { results.set("ged read", "yes"); break }
                usleep(500_000)
            }
            results.set("too many", remote(["resize", "--cpus", "3"]).stderr)
            results.set("add", "\(remote(["resize", "--cpus", "2"]).status)")
            guard session.waitForLine("CPU1 has been hot-added", timeout: 120) else { return }
            results.set("remove", "\(remote(["resize", "--cpus", "1"]).status)")
            // The guest never onlined CPU 1 (no user space), so it ejects it at once and the VMM ends the
            // thread. Until then another resize answers 429 (a removal is pending); after it, 1 is a no-op.
            let removed = Date().addingTimeInterval(120)
            while Date() < removed, remote(["resize", "--cpus", "1"]).status != 0 { usleep(500_000) }
            results.set("info", remote(["info"]).stdout)
        } } }
        let context = run.context
        #expect(run.first(containing: "acpi-ged") == nil, "the GED probes without complaint: \(context)")
        #expect(results["button"] == "0", "\(context)")
        #expect(results["ged read"] == "yes", "the guest's _EVT read the GED: \(context)")
        #expect(results["too many"]?.contains("400 Bad Request: cannot resize the VM: desired_vcpus 3: must be 1 to max_vcpus (2)") == true,
                "\(results["too many"] ?? "")")
        #expect(results["add"] == "0", "\(context)")
        #expect(run.first(containing: "CPU1 has been hot-added") != nil, "\(context)")
        #expect(results["remove"] == "0", "\(context)")
        #expect(run.stderr.contains("vcpu1 added") && run.stderr.contains("vcpu1 removed (the guest ejected it)"), "\(context)")
        #expect(results["info"]?.contains("\"boot_vcpus\":1") == true, "\(results["info"] ?? "")")
        #expect(run.status == 0, "\(context)")
    }

    /// RAM and a PCI disk added at run time, in one boot of the microVM kernel with Tests/Linux/hotplug.config
    /// (memory hotplug with blocks onlined by the kernel, CONFIG_HOTPLUG_PCI_ACPI):
    /// - vm.resize: Linux reads the memory device's _CRS, adds and onlines the block, and reports success
    ///   through _OST; bad sizes are refused and change nothing;
    /// - vm.add-disk: acpiphp finds the disk in slot 1 and virtio_blk binds it (its size in dmesg); then
    ///   vm.remove-device: the kernel unbinds it and runs `_EJ0`, after which the VMM detaches it.
    @Test(.timeLimit(.minutes(60)))
    func ramAndADiskAddedAtRunTimeReachLinux() async throws {
        let kernel = try await Harness.offPool {
            try LinuxHarness.recipe("microvm-kernel.sh", [Harness.packageRoot + "/Tests/Linux/hotplug.config"])
        }
        let socket = NSTemporaryDirectory() + "actor-vmm-hotplug-ram-\(getpid()).sock"
        let disk = NSTemporaryDirectory() + "actor-vmm-hotplug-pci-\(getpid()).raw"
        defer { unlink(socket); unlink(disk) }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 4 << 20)))
        let results = Results()
        let remote: @Sendable ([String]) -> Harness.Result = { arguments in
            Harness.run(Harness.remotePath, ["--api-socket", socket] + arguments, timeout: 60)
        }
        let run = try await Harness.offPool { LinuxHarness.oneAtATime { LinuxHarness.run([
            "--kernel", kernel + "/vmlinux", "--initramfs", kernel + "/initramfs.cpio",
            "--memory", "size=256M,hotplug_method=acpi,hotplug_size=512M", "--serial", "tty", "--console", "off",
            "--cmdline", "console=ttyS0", "--api-socket", "path=\(socket)", "-v",
        ], until: "ACPI: button: Power Button [PWRB]", timeout: 1200) { session in
            defer { kill(session.pid, SIGTERM) }
            results.set("odd", remote(["resize", "--memory", "300M"]).stderr)
            results.set("beyond", remote(["resize", "--memory", "2G"]).stderr)
            results.set("add", "\(remote(["resize", "--memory", "384M"]).status)")
            results.set("info", remote(["info"]).stdout)
            // The kernel rebuilds its zonelists (once at boot, again when it onlines the new block), then
            // reports through _OST.
            _ = session.waitForLine("Built 1 zonelists", count: 2, timeout: 120)
            let added = remote(["add-disk", "path=\(disk),id=hot0"])
            results.set("add disk", added.stdout + added.stderr)
            guard session.waitForLine("[vda]", timeout: 300) else { return }
            results.set("info added", remote(["info"]).stdout)
            results.set("remove", "\(remote(["remove-device", "hot0"]).status)")
            let deadline = Date().addingTimeInterval(300)
            while Date() < deadline, remote(["info"]).stdout.contains("_virtio-pci-hot0") { usleep(500_000) }
            results.set("info removed", remote(["info"]).stdout)
        } } }
        let context = run.context
        #expect(results["odd"]?.contains("must grow RAM by a multiple of 128 MiB") == true, "\(results["odd"] ?? "")")
        #expect(results["beyond"]?.contains("beyond boot RAM + hotplug_size") == true, "\(results["beyond"] ?? "")")
        #expect(results["add"] == "0", "\(context)")
        #expect(results["info"]?.contains("\"memory_actual_size\":402653184") == true, "\(results["info"] ?? "")")
        #expect(run.stderr.contains("memory: 128 MiB added at 0x100000000 (now 384 MiB)"), "\(context)")
        #expect(run.stderr.contains("memory hotplug: the guest reports success for event 0x1 on slot 0"), "_OST: \(context)")
        #expect(results["add disk"] == #"{"id":"hot0","bdf":"0000:00:01.0"}"# + "\n", "\(context)")
        #expect(run.first(containing: "virtio_blk virtio0: [vda] 8192 512-byte logical blocks") != nil, "\(context)")
        #expect(results["info added"]?.contains("\"_virtio-pci-hot0\"") == true, "\(results["info added"] ?? "")")
        #expect(results["remove"] == "0", "\(context)")
        #expect(run.stderr.contains("'hot0' removed (the guest ejected it)"), "\(context)")
        #expect(results["info removed"]?.contains("hot0") == false, "\(results["info removed"] ?? "")")
        #expect(run.status == 0, "\(context)")
    }

    /// virtio-mem with the same kernel (its virtio_mem driver built in; docs/hotplug.md), checked from the
    /// kernel's side: the driver probes the device (its dmesg lines: the 512 MiB region at 4 GiB, nothing
    /// plugged); after `resize --memory 384M` it plugs 128 MiB (vm.counters' mem0 plugged_size) and the kernel
    /// onlines them into ZONE_MOVABLE (`memhp_default_state=online_movable`: it rebuilds its zonelists, with
    /// 32768 more pages); after `resize --memory 256M` it unplugs them again (plugged_size 0).
    @Test(.timeLimit(.minutes(60)))
    func virtioMemBlocksArePluggedAndUnpluggedByLinux() async throws {
        let kernel = try await Harness.offPool {
            try LinuxHarness.recipe("microvm-kernel.sh", [Harness.packageRoot + "/Tests/Linux/hotplug.config"])
        }
        let socket = NSTemporaryDirectory() + "actor-vmm-hotplug-vmem-\(getpid()).sock"
        defer { unlink(socket) }
        let results = Results()
        let remote: @Sendable ([String]) -> Harness.Result = { arguments in
            Harness.run(Harness.remotePath, ["--api-socket", socket] + arguments, timeout: 60)
        }
        // vm.counters' mem0 plugged_size once it equals `size`, or nil after `seconds`.
        let pluggedSize: @Sendable (UInt64, Double) -> String? = { size, seconds in
            let deadline = Date().addingTimeInterval(seconds)
            repeat {
                if remote(["counters"]).stdout.contains("\"plugged_size\":\(size),") { return "\(size)" }
                usleep(500_000)
            } while Date() < deadline
            return nil
        }
        let run = try await Harness.offPool { LinuxHarness.oneAtATime { LinuxHarness.run([
            "--kernel", kernel + "/vmlinux", "--initramfs", kernel + "/initramfs.cpio",
            "--memory", "size=256M,hotplug_method=virtio-mem,hotplug_size=512M", "--serial", "tty", "--console", "off",
            "--cmdline", "console=ttyS0 memhp_default_state=online_movable", "--api-socket", "path=\(socket)", "-v",
        ], until: "virtio_mem virtio0: requested size: 0x0", timeout: 1200) { session in
            defer { kill(session.pid, SIGTERM) }
            results.set("at boot", pluggedSize(0, 0) ?? "not 0")
            results.set("grow", "\(remote(["resize", "--memory", "384M"]).status)")
            results.set("plugged", pluggedSize(128 << 20, 300) ?? "not 128 MiB")
            // The kernel onlines the new block into the empty ZONE_MOVABLE: it rebuilds its zonelists.
            _ = session.waitForLine("Built 1 zonelists", count: 2, timeout: 120)
            results.set("info grown", remote(["info"]).stdout)
            results.set("shrink", "\(remote(["resize", "--memory", "256M"]).status)")
            results.set("unplugged", pluggedSize(0, 300) ?? "not 0")
            results.set("info shrunk", remote(["info"]).stdout)
        } } }
        let context = run.context
        #expect(run.first(containing: "virtio_mem virtio0: start address: 0x100000000") != nil, "\(context)")
        #expect(run.first(containing: "virtio_mem virtio0: region size: 0x20000000") != nil, "\(context)")
        #expect(run.first(containing: "virtio_mem virtio0: plugged size: 0x0") != nil, "\(context)")
        #expect(results["at boot"] == "0", "\(context)")
        #expect(results["grow"] == "0", "\(context)")
        #expect(results["plugged"] == "\(128 << 20)", "the driver plugged 128 MiB: \(context)")
        #expect(run.first(containing: "virtio_mem virtio0: requested size: 0x8000000") != nil, "\(context)")
        // "Built 1 zonelists, mobility grouping on.  Total pages: N": at boot, then with the new block.
        let pages = run.lines.filter { $0.text.contains("Built 1 zonelists") }.compactMap { line in
            line.text.components(separatedBy: "Total pages: ").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
        // N counts the pages above the zones' high watermarks (nr_free_zone_pages), so less than the 32768 added
        // (28678 on this host).
        #expect(pages.count >= 2 && (24576...32768) ~= pages[1] - pages[0], "the kernel onlined 128 MiB: \(pages) \(context)")
        #expect(results["info grown"]?.contains("\"memory_actual_size\":\(384 << 20)") == true, "\(results["info grown"] ?? "")")
        #expect(results["info grown"]?.contains("\"hotplugged_size\":\(128 << 20)") == true, "\(results["info grown"] ?? "")")
        #expect(results["shrink"] == "0", "\(context)")
        #expect(results["unplugged"] == "0", "the driver unplugged the 128 MiB: \(context)")
        #expect(results["info shrunk"]?.contains("\"memory_actual_size\":\(256 << 20)") == true, "\(results["info shrunk"] ?? "")")
        #expect(run.status == 0, "\(context)")
    }
}
