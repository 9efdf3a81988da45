import Foundation
import Glibc
import Testing

/// virtio-mem on /dev/kvm with the test guest's `virtiomem` check (docs/hotplug.md): the guest's driver finds
/// the device and its refusals; `actor-vmm-remote resize --memory` refuses bad sizes with a one-line 400 and
/// the VM untouched, then asks for 4 MiB more (the guest plugs it, writes and reads it back; vm.info and
/// vm.counters follow), then for the boot size again (the guest unplugs, the memory reads zero, UNPLUG_ALL).
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"), .serialized)
struct VirtioMemEndToEndTests {
    @Test func theGuestPlugsWhatResizeAsksAndGivesItBack() throws {
        let vmm = try VmmProcess(["-v"])
        let base = "/tmp/actor-vmm-e2e-\(getpid())-vmem"
        let serialLog = base + "-serial.log", configFile = base + "-config.json"
        defer { for path in [serialLog, configFile] { unlink(path) } }
        unlink(serialLog)
        let boot = 64 << 20, region = 128 << 20
        let config = #"{"payload": {"kernel": "\#(Harness.guestPath)", "cmdline": "tests=virtiomem"}, "cpus": {"boot_vcpus": 1, "max_vcpus": 1}, "#
            + #""memory": {"size": \#(boot), "hotplug_method": "VirtioMem", "hotplug_size": \#(region)}, "serial": {"mode": "File", "file": "\#(serialLog)"}}"#
        try config.write(toFile: configFile, atomically: true, encoding: .utf8)
        func serial() -> String { (try? String(contentsOfFile: serialLog, encoding: .utf8)) ?? "" }
        func info() -> String { vmm.remote(["info"]).stdout }
        func plugged() -> String { vmm.remote(["counters"]).stdout }

        #expect(vmm.remote(["create", configFile]).status == 0)
        #expect(vmm.remote(["boot"]).status == 0)
        #expect(Harness.eventually(60) { serial().contains("VIRTIOMEM READY") }, "the guest waits: \(serial())")
        #expect(info().contains(#""memory_actual_size":\#(boot)"#), "\(info())")

        for (size, why) in [("\((boot + region) / 1_048_576 + 2)M", "beyond"), ("65M", "2 MiB"), ("32M", "below the boot RAM")] {
            let refused = vmm.remote(["resize", "--memory", size])
            #expect(refused.status == 1 && refused.stderr.contains("400") && refused.stderr.contains(why), "\(size): \(refused.stderr)")
            #expect(refused.stderr.split(separator: "\n").count == 1, "one line: \(refused.stderr)")
        }
        #expect(!info().contains("hotplugged_size"), "nothing changed: \(info())")

        let grown = vmm.remote(["resize", "--memory", "68M"])
        #expect(grown.status == 0, "\(grown.stderr)")
        #expect(Harness.eventually(60) { serial().contains("VIRTIOMEM PLUGGED 4194304") }, "\(serial())")
        #expect(info().contains(#""hotplugged_size":4194304"#) && info().contains(#""memory_actual_size":\#(boot + 4 << 20)"#), "\(info())")
        #expect(plugged().contains(#""plugged_size":4194304"#), "\(plugged())")

        #expect(vmm.remote(["resize", "--memory", "64M"]).status == 0)
        #expect(Harness.eventually(60) { serial().contains("TESTGUEST DONE") }, "\(serial())")
        #expect(serial().contains("TEST virtiomem PASS block=2097152 region=134217728 plugged=4194304 unplugged\n"), "\(serial())\n\(vmm.stderr)")
        #expect(vmm.waitForExit(timeout: 60) == 0, "the guest powered off: \(vmm.stderr)")
    }

    /// The guest plugs 4 MiB and writes a pattern in it; the VM is snapshotted and restored in a new process
    /// (or migrated live to one); there the shrink reaches the same driver state: the unplug of a block the
    /// source plugged is acknowledged, plugged_size is right, the other block still holds the pattern.
    @Test(arguments: ["snapshot", "unix"])
    func pluggedMemoryAndTheDeviceSurvive(_ how: String) throws {
        let base = "/tmp/actor-vmm-e2e-\(getpid())-vmem-\(how)"
        let serialLog = base + ".serial", directory = base + "-dir", socket = base + ".sock"
        defer {
            unlink(serialLog)
            try? FileManager.default.removeItem(atPath: directory)
        }
        unlink(serialLog)
        func serial() -> String { (try? String(contentsOfFile: serialLog, encoding: .utf8)) ?? "" }
        let source = try VmmProcess(["--kernel", Harness.guestPath, "--cmdline", "tests=virtiomem", "--serial", "file=\(serialLog)",
                                     "--memory", "size=64M,hotplug_method=virtio-mem,hotplug_size=128M"])
        #expect(Harness.eventually(60) { serial().contains("VIRTIOMEM READY") }, "\(serial())")
        #expect(source.remote(["resize", "--memory", "68M"]).status == 0)
        #expect(Harness.eventually(60) { serial().contains("VIRTIOMEM PLUGGED 4194304") }, "\(serial())")

        let destination: VmmProcess
        if how == "snapshot" {
            #expect(source.remote(["pause"]).status == 0)
            let snapshot = source.remote(["snapshot", "file://\(directory)"])
            #expect(snapshot.status == 0, "\(snapshot.stderr)")
            #expect(source.remote(["shutdown-vmm"]).status == 0)
            #expect(source.waitForExit() == 0)
            destination = try VmmProcess(["--restore", "source_url=file://\(directory),resume=on"])
        } else {
            destination = try VmmProcess([])
            let destinationSocket = destination.socketPath, url = "unix:\(socket)"
            let receiver = Thread { _ = Harness.run(Harness.remotePath, ["--api-socket", destinationSocket, "receive-migration", url], timeout: 60) }
            receiver.start()
            var sent = source.remote(["send-migration", url])
            for _ in 0..<100 where sent.status != 0 && sent.stderr.contains("cannot connect") {
                usleep(50_000)
                sent = source.remote(["send-migration", url])
            }
            #expect(sent.status == 0, "send-migration: \(sent.stderr)")
            _ = source.remote(["shutdown-vmm"])
        }
        #expect(Harness.eventually(30) { destination.remote(["info"]).stdout.contains(#""hotplugged_size":4194304"#) },
                "the config came along: \(destination.remote(["info"]).stdout) \(destination.stderr)")
        #expect(destination.remote(["counters"]).stdout.contains(#""plugged_size":4194304"#), "the device's state came along")
        #expect(destination.remote(["resize", "--memory", "64M"]).status == 0)
        #expect(Harness.eventually(60) { serial().contains("TESTGUEST DONE") }, "\(serial())")
        #expect(serial().contains("TEST virtiomem PASS block=2097152 region=134217728 plugged=4194304 unplugged\n"), "\(serial())\n\(destination.stderr)")
        #expect(serial().components(separatedBy: "TESTGUEST START").count == 2, "the guest did not start over")
        #expect(destination.waitForExit(timeout: 60) == 0, "\(destination.stderr)")
    }

    /// A reboot builds a new machine from the config, whose hotplugged_size the last resize set: the device
    /// asks for the same size again and every block starts unplugged (the test guest has no driver running).
    @Test func aRebootAsksForTheLastRequestedSize() throws {
        let vmm = try VmmProcess(["--kernel", Harness.guestPath, "--cmdline", "tests=snapcount snap_ticks=100000",
                                  "--memory", "size=64M,hotplug_method=virtio-mem,hotplug_size=128M,hotplugged_size=2M"])
        func counters() -> String { vmm.remote(["counters"]).stdout }
        #expect(Harness.eventually(20) { counters().contains(#""requested_size":2097152"#) }, "\(counters())")
        #expect(vmm.remote(["resize", "--memory", "70M"]).status == 0)
        #expect(counters().contains(#""requested_size":6291456"#) && counters().contains(#""plugged_size":0"#), "\(counters())")
        #expect(vmm.remote(["reboot"]).status == 0)
        #expect(Harness.eventually(20) { counters().contains(#""requested_size":6291456"#) }, "\(counters())")
        #expect(vmm.remote(["info"]).stdout.contains(#""hotplugged_size":6291456"#))
        #expect(vmm.remote(["resize", "--memory", "64M"]).status == 0)
        #expect(!vmm.remote(["info"]).stdout.contains("hotplugged_size"), "0 is written as absent, as Cloud Hypervisor does")
        let remove = vmm.remote(["remove-device", "mem0"])
        #expect(remove.status == 1 && remove.stderr.contains("400") && remove.stderr.contains("virtio-mem"), "\(remove.stderr)")
        _ = vmm.remote(["shutdown-vmm"])
    }
}
