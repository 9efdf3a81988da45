import Foundation
import Glibc
import Testing

/// PCI hotplug on /dev/kvm with the test guest's `hotplug` check (docs/hotplug.md): a disk added through
/// actor-vmm-remote appears in a free slot (the guest sees the GED's PCI event, PCIU and the new function in
/// configuration space), is asked back with remove-device (PCID), and goes once the guest ejects it (B0EJ);
/// vm.info's device tree follows each step, and every descriptor the device had is closed.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"), .serialized)
struct PciHotplugEndToEndTests {
    @Test func aDiskAddedAndRemovedWhileTheGuestWatches() throws {
        try addAndRemove(command: "add-disk", params: { "path=\($0),id=hot0" }, functionID: "1af41042")
    }

    /// A NIC on a TAP the VMM creates: the TAP goes with the device.
    @Test func aNicAddedAndRemovedWhileTheGuestWatches() throws {
        try addAndRemove(command: "add-net", params: { _ in "id=hot0" }, functionID: "1af41041")
    }

    /// Under `--event-loops per-queue` (`actor_vmm.event_loops` in the config) a hot-added two-queue disk and
    /// two-pair NIC get their loops — `vmm-hot0` and a `vmm-hot0-qN` per queue (pair) — and lose them with
    /// the device: no thread, no descriptor left. (Two vCPUs: a NIC has at most a queue pair per vCPU.)
    @Test(arguments: [("add-disk", "1af41042"), ("add-net", "1af41041")])
    func aMultiQueueDeviceAddedAndRemovedWithALoopPerQueue(command: String, functionID: String) throws {
        try addAndRemove(command: command, params: { command == "add-disk" ? "path=\($0),id=hot0,num_queues=2" : "id=hot0,num_queues=4" },
                         functionID: functionID, eventLoops: "per-queue")
    }

    /// `command params(file)` adds `hot0` (a 1 MiB file is there for a disk); the guest must see `functionID`.
    /// With `eventLoops` per-queue, the device's loops must come and go with it.
    func addAndRemove(command: String, params: (String) -> String, functionID: String, eventLoops: String = "shared") throws {
        let vmm = try VmmProcess(["-v"])  // info: the VMM logs the removal
        let base = "/tmp/actor-vmm-e2e-\(getpid())-hotplug"
        let serialLog = base + "-serial.log", configFile = base + "-config.json", disk = base + "-disk.raw"
        defer { for path in [serialLog, configFile, disk] { unlink(path) } }
        unlink(serialLog)
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20)))
        let own = eventLoops == "shared" ? "" : #", "actor_vmm": {"event_loops": "\#(eventLoops)"}"#
        try Harness.vmConfig(kernel: Harness.guestPath, cmdline: "tests=hotplug", serialFile: serialLog, extra: own)
            .replacingOccurrences(of: #""boot_vcpus": 1, "max_vcpus": 1"#,
                                  with: eventLoops == "shared" ? #""boot_vcpus": 1, "max_vcpus": 1"# : #""boot_vcpus": 2, "max_vcpus": 2"#)
            .write(toFile: configFile, atomically: true, encoding: .utf8)
        func serial() -> String { (try? String(contentsOfFile: serialLog, encoding: .utf8)) ?? "" }
        func tree() -> String { vmm.remote(["info"]).stdout }

        #expect(vmm.remote(["create", configFile]).status == 0)
        #expect(vmm.remote(["boot"]).status == 0)
        #expect(Harness.eventually(60) { serial().contains("HOTPLUG READY") }, "the guest waits: \(serial())")

        if command == "add-disk" {
            let missing = vmm.remote(["add-disk", "path=\(base)-nothing.raw"])
            #expect(missing.status == 1 && missing.stderr.contains("400") && missing.stderr.contains("path:"), "\(missing.stderr)")
            let bad = vmm.remote(["add-disk", "path=\(disk),queue_size=3"])
            #expect(bad.status == 2 && bad.stderr.contains("queue_size"), "\(bad.stderr)")
        }

        let before = vmm.openDescriptors()
        let added = vmm.remote([command, params(disk)])
        #expect(added.status == 0 && added.stdout == #"{"id":"hot0","bdf":"0000:00:01.0"}"# + "\n", "\(added.stdout)\(added.stderr)")
        let taps = TapPeer.taps(ownedBy: vmm.pid)
        #expect(command == "add-disk" ? taps.isEmpty : Set(taps).count == 1, "\(taps)")  // a descriptor per TAP queue
        let duplicate = vmm.remote([command, params(disk)])
        #expect(duplicate.status == 1 && duplicate.stderr.contains("409"), "\(duplicate.stderr)")
        #expect(tree().contains(#""_virtio-pci-hot0""#), "vm.info's device tree has it")
        #expect(Harness.eventually(60) { serial().contains("HOTPLUG ADDED slot=1") }, "the guest sees slot 1 come: \(serial())")
        if eventLoops == "per-queue" {
            let threads = vmm.threadNames()
            #expect(["vmm-hot0", "vmm-hot0-q0", "vmm-hot0-q1"].allSatisfy(threads.contains), "\(threads)")
        }

        let unknown = vmm.remote(["remove-device", "nope"])
        #expect(unknown.status == 1 && unknown.stderr.contains("404"), "\(unknown.stderr)")
        #expect(vmm.remote(["remove-device", "hot0"]).status == 0)
        #expect(Harness.eventually(60) { serial().contains("HOTPLUG REMOVED") }, "\(serial())")
        #expect(Harness.eventually(20) { !tree().contains("hot0") }, "vm.info no longer has it: \(tree())")
        // Doorbells, irqfds, the image file: every descriptor the device had is closed.
        #expect(Harness.eventually(20) { vmm.openDescriptors() == before }, "\(before) → \(vmm.openDescriptors())")
        #expect(Harness.eventually(20) { !vmm.threadNames().contains { $0.hasPrefix("vmm-hot0") } }, "\(vmm.threadNames())")
        #expect(TapPeer.taps(ownedBy: vmm.pid).isEmpty && taps.allSatisfy { if_nametoindex($0) == 0 }, "the TAP is gone")
        #expect(vmm.remote(["power-button"]).status == 0)
        #expect(Harness.eventually(60) { serial().contains("TESTGUEST DONE") }, "\(serial())")
        #expect(serial().contains("TEST hotplug PASS slot=1 id=\(functionID) removed\n"), "\(serial())\n\(vmm.stderr)")
        #expect(vmm.waitForExit(timeout: 60) == 0, "the guest powered off: \(vmm.stderr)")
        #expect(vmm.stderr.contains("'hot0' removed (the guest ejected it)"), "\(vmm.stderr)")
    }
}
