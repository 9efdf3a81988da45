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
}
