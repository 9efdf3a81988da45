import Foundation
import Glibc
import Testing

/// The nested KVM tier (docs/nested.md): what kvm_pvm hosts cannot show — Linux user space, a root disk,
/// the network both ways, SMP guests to their shell — checked on a KVM with hardware-style virtualization
/// (QEMU's emulated SVM in an L1 machine). One L1 boot runs every check (Tests/Nested/checks.sh); each test
/// here asserts on its own check's record, and the host checks what the guests left behind.
@Suite(.disabled(if: NestedHarness.skipReason != nil, Comment(rawValue: NestedHarness.skipReason ?? "")),
       .timeLimit(.minutes(40)))
struct NestedKvmTests {
    /// Checks common to every VMM run: it ran to the end with exit 0, on a KVM without compatibility mode
    /// (the VMM logs that at `-v`).
    static func expectCleanExit(_ check: NestedHarness.Check, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(check.status == "0", "exit status: \(check.context)", sourceLocation: sourceLocation)
        #expect(check.first(containing: "host compatibility mode on") == nil,
                "no compatibility mode on L1's KVM: \(check.context)", sourceLocation: sourceLocation)
    }

    /// The test guest's device suite with `--compat off`, each hand-off strategy, both placements.
    @Test(arguments: ["inline", "enqueue", "task"], ["shared", "per-device"])
    func testGuestDeviceSuite(handoff: String, placement: String) async throws {
        let check = try await NestedHarness.check("devices-\(handoff)-\(placement)")
        Self.expectCleanExit(check)
        try VirtioTests.expectEveryDevicePassed(
            lines: check.lines.map(\.text), diskA: check.dir + "/disk-a.raw", diskB: check.dir + "/disk-b.raw",
            console: check.dir + "/console.txt", readOnlyContents: VirtioTests.readOnlyContents, context: check.context)
        let peer = NestedHarness.Batch.read(check.dir + "/peer.txt") ?? ""
        #expect(peer.hasPrefix("saw_guest_frame=yes"), "the TAP peer in L1: \(peer)")
        check.report("test guest (\(handoff), \(placement))", marker: "TESTGUEST DONE")
    }

    /// Debian's cloud kernel, unmodified, to /init's marker with every vCPU online, then power-off.
    @Test(arguments: ["vmlinuz", "vmlinux"], [1, 4])
    func debianCloudKernelReachesUserSpace(file: String, cpus: Int) async throws {
        let check = try await NestedHarness.check("debian-\(file)-\(cpus)cpu")
        Self.expectCleanExit(check)
        #expect(check.first(containing: file == "vmlinuz" ? "loaded (bzImage" : "loaded (PVH)") != nil, "\(check.context)")
        let marker = check.first(containing: LinuxBootTests.initMarker)?.text ?? ""
        #expect(marker.hasSuffix(cpus == 1 ? " cpus=0" : " cpus=0-\(cpus - 1)"), "all CPUs online: \(check.context)")
        #expect(check.first(containing: "guest powered off") != nil, "\(check.context)")
        check.report("Debian cloud kernel (\(file), \(cpus) vCPU)", marker: LinuxBootTests.initMarker)
    }

    /// Cloud Hypervisor's README command lines (only paths changed): the kernel mounts ext4 from partition 1
    /// of the raw disk, runs its init, which writes a file, reads virtio-rng, checks eth0 and pings the TAP;
    /// L1 pings the guest back; the host reads the file from the image. `disk-perqueue`: the hvc0 line with four
    /// disk queues and four queue pairs under `--event-loops per-queue` (Linux uses a queue per vCPU).
    @Test(arguments: ["disk-hvc0", "disk-serial", "disk-perqueue"])
    func cloudHypervisorCommandLine(name: String) async throws {
        let check = try await NestedHarness.check(name)
        // Exit 0 without a signal: the guest powered off. On ttyS0 the kernel's last words show it too; on
        // hvc0 they never arrive (the messages after device shutdown; see docs/nested.md).
        Self.expectCleanExit(check)
        if name == "disk-serial" {
            #expect(check.first(containing: "reboot: Power down") != nil, "the guest powered off: \(check.context)")
        }
        if name == "disk-perqueue" {
            #expect(check.first(containing: "queues on vmm-_disk0-q0 vmm-_disk0-q1 vmm-_disk0-q2 vmm-_disk0-q3") != nil,
                    "a loop per disk queue: \(check.context)")
            #expect(check.first(containing: "queues on vmm-_net1-q0 vmm-_net1-q1 vmm-_net1-q2 vmm-_net1-q3") != nil,
                    "a loop per queue pair: \(check.context)")
        }
        // console=hvc0: the kernel's own log reached virtio-console; console=ttyS0: the UART.
        #expect(check.first(containing: "EXT4-fs (vda1): mounted filesystem") != nil, "\(check.context)")
        let line = try #require(check.first(containing: "ACTORVMM-DISK-INIT ")?.text, "\(check.context)")
        // `--net "tap=,mac=,ip=,mask="`: the VMM's own TAP and a random MAC, which L1 must see too.
        let mac = try Self.expectDiskGuestResult(line, check: check, rng: name == "disk-serial", mac: nil)
        let host = NestedHarness.Batch.read(check.dir + "/host.txt") ?? ""
        #expect(host.hasPrefix("ping=ok"), "L1 pinged the guest: \(host)")
        #expect(host.hasSuffix("neighbour=\(mac)"), "L1 saw the guest's MAC \(mac): \(host)")
        check.report("Cloud Hypervisor's command line (\(name))", marker: "ACTORVMM-DISK-INIT")
    }

    /// The same guest through the REST API: create, boot, pause (the guest's ticks stop), resume (they go on),
    /// shutdown, shutdown-vmm; then the file it wrote is in the image.
    @Test func apiLifecycleWithActorVmmRemote() async throws {
        let check = try await NestedHarness.check("api")
        #expect(check.status == "0", "\(check.context)")
        for step in ["socket", "create", "created", "boot", "running", "init", "ticking", "pause", "paused",
                     "no-ticks-while-paused", "resume", "resumed", "ticks-again", "shutdown", "shut-down",
                     "shutdown-vmm", "vmm-exit-0"] {
            #expect(check.first(containing: "API STEP \(step) ok") != nil, "step \(step): \(check.context)")
        }
        let line = try #require(check.first(containing: "ACTORVMM-DISK-INIT ")?.text, "\(check.context)")
        try Self.expectDiskGuestResult(line, check: check, rng: true, cpus: "0-1", mac: Self.diskMac)
    }

    /// The project's own KVM suites (EndToEndTests, VcpuLifecycleTests, CompatEndToEndTests), run in L1 by the
    /// test bundle this process is. `ACTOR_VMM_NESTED_SUITES=0` leaves them out.
    @Test(.disabled(if: NestedHarness.environment["ACTOR_VMM_NESTED_SUITES"] == "0", "ACTOR_VMM_NESTED_SUITES=0"))
    func projectKvmSuitesPassInL1() async throws {
        let check = try await NestedHarness.check("suites")
        let failures = check.lines.filter { $0.text.contains("✘") }.map(\.text).joined(separator: "\n")
        let stalls = NestedHarness.Batch.read(check.dir + "/stalls.txt").map { "\nstalled:\n" + $0.prefix(20_000) } ?? ""
        #expect(check.status == "0", "failed in L1:\n\(failures)\n\(check.context)\(stalls)")
        let summary = check.lines.last { $0.text.contains("Test run with") }?.text ?? "no summary"
        print("nested tier: the project's KVM suites in L1: \(summary) (\(String(format: "%.0f", check.seconds)) s)")
    }

    static let diskMac = "52:54:00:12:34:58"

    /// The disk guest's marker line, and the same result read back from its root file system on the host.
    /// `mac`: the MAC eth0 must have; nil: any locally administered unicast MAC (the VMM's random one).
    /// Returns the guest's MAC.
    @discardableResult
    static func expectDiskGuestResult(_ line: String, check: NestedHarness.Check, rng: Bool, cpus: String = "0-3",
                                      mac: String?, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let fields = Self.fields(line)
        #expect(fields["cpus"] == cpus, "\(line)", sourceLocation: sourceLocation)
        let guestMac = fields["mac"] ?? ""
        if let mac {
            #expect(guestMac == mac, "\(line)", sourceLocation: sourceLocation)
        } else {
            let first = guestMac.split(separator: ":").first.flatMap { UInt8($0, radix: 16) }
            #expect(guestMac.split(separator: ":").count == 6 && first.map { $0 & 0x03 == 0x02 } == true,
                    "a locally administered unicast MAC: \(line)", sourceLocation: sourceLocation)
        }
        #expect(fields["ping"] == "ok", "the guest pinged the TAP address: \(line)", sourceLocation: sourceLocation)
        #expect(fields["root"] == "/dev/root:ext4:rw" || fields["root"] == "/dev/vda1:ext4:rw", "\(line)",
                sourceLocation: sourceLocation)
        let random = fields["rng"] ?? ""
        if rng {
            #expect(random.count == 32 && random.allSatisfy(\.isHexDigit), "16 bytes of virtio-rng: \(line)",
                    sourceLocation: sourceLocation)
        }
        // The host's side: the file in partition 1 of the image, read with debugfs.
        let read = Harness.run("/usr/bin/env", ["debugfs", "-R", "cat /avm-result.txt", check.dir + "/disk.raw?offset=1048576"])
        let written = line.components(separatedBy: "ACTORVMM-DISK-INIT ").last?.components(separatedBy: " uptime=").first
        #expect(read.status == 0 && read.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == written,
                "the file in the image: \(read.stdout.debugDescription) \(read.stderr)", sourceLocation: sourceLocation)
        return guestMac
    }
}
