import Foundation
import Glibc
import Testing

/// Linux guests (docs/boot.md). Where `/dev/kvm` is kvm_pvm (this project's development and CI hosts) guest
/// user space cannot make system calls (docs/compat.md), so the check ends at "Run /init as init process":
/// the harness stops the VMM with SIGTERM once it has seen that line, so nothing hangs. On a hardware-KVM
/// host the initramfs's /init runs: it prints its marker and powers off, and the VMM must exit 0 by itself.
///
/// - The microVM test kernel (Tests/Linux/microvm-kernel.sh, built once into a cache; .ci/run builds it
///   before the tests) runs by default wherever /dev/kvm is: it is the everyday Linux check.
/// - Debian's own cloud kernel, as bzImage and as PVH vmlinux (Tests/Linux/debian-guest.sh), takes about
///   11–12 minutes per format here, so it runs on request: `ACTOR_VMM_LINUX=all swift test --filter LinuxBootTests`.
///
/// `ACTOR_VMM_LINUX=0` skips every Linux boot (for a quick `swift test` while iterating).
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"),
       .enabled(if: LinuxHarness.selection != "0", "ACTOR_VMM_LINUX=0: Linux boots skipped"),
       .serialized)
struct LinuxBootTests {
    static let runInit = "Run /init as init process"
    /// The initramfs's /init prints this (Tests/Linux/debian-guest.sh) before it powers off.
    static let initMarker = "ACTORVMM-LINUX-INIT"
    /// A host whose KVM emulates ring 0 (the VMM's own detection, rule 1: docs/compat.md).
    static let emulatedHost = access("/sys/module/kvm_pvm", F_OK) == 0
    /// Where the harness stops the VMM: at Run /init on an emulating host; nowhere on hardware KVM.
    static var stopMarker: String? { emulatedHost ? runInit : nil }

    /// The end of a Linux run: on an emulating host, Run /init then SIGTERM (exit 0); on hardware KVM,
    /// /init's marker, then the guest powers off and the VMM exits 0 by itself.
    static func expectTheEnd(_ run: LinuxHarness.Run, sourceLocation: SourceLocation = #_sourceLocation) {
        let context = run.context
        #expect(run.first(containing: runInit) != nil, "never printed '\(runInit)': \(context)", sourceLocation: sourceLocation)
        #expect(run.stderr.contains("host compatibility mode on") == emulatedHost,
                "compatibility mode is on exactly on an emulating host: \(context)", sourceLocation: sourceLocation)
        if emulatedHost {
            #expect(run.stoppedOnMarker, "stopped at '\(runInit)': \(context)", sourceLocation: sourceLocation)
            #expect(run.status == 0, "a SIGTERM'd VMM exits 0: \(context)", sourceLocation: sourceLocation)
        } else {
            #expect(run.first(containing: initMarker) != nil, "/init printed its marker: \(context)", sourceLocation: sourceLocation)
            #expect(run.status == 0 && run.stderr.contains("guest powered off"), "/init powered off: \(context)", sourceLocation: sourceLocation)
        }
    }

    @Test(.timeLimit(.minutes(30)))
    func microvmKernelFindsEveryDeviceAndRunsInit() async throws {
        let kernel = try await Harness.offPool { try LinuxHarness.recipe("microvm-kernel.sh") }
        let prefix = NSTemporaryDirectory() + "actor-vmm-linux-\(getpid())"
        let disk = prefix + "-disk.raw", console = prefix + "-console.txt"
        defer { unlink(disk); unlink(console) }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 8 << 20)))
        let tap = "avml\(getpid() % 100_000)"
        let run = try await Harness.offPool { LinuxHarness.oneAtATime { LinuxHarness.run([
            "--kernel", kernel + "/vmlinux", "--initramfs", kernel + "/initramfs.cpio",
            "--cpus", "boot=2", "--memory", "size=512M", "--serial", "tty", "--console", "file=\(console)",
            "--disk", "path=\(disk),num_queues=2", "--rng",  // multi-queue virtio-blk: one queue per vCPU
            "--net", "tap=\(tap),mac=52:54:00:12:34:57,ip=192.168.250.1,mask=255.255.255.0",
            // The kernel logs to both consoles; the last one is /dev/console, where /init prints its marker:
            // ttyS0, the VMM's stdout, which the harness reads.
            "--cmdline", "console=hvc0 console=ttyS0 ip=192.168.250.2::192.168.250.1:255.255.255.0::eth0:off",
            "-v",
        ], until: Self.stopMarker, timeout: 900) } }
        let context = run.context
        Self.expectTheEnd(run)
        // ActorVMM's description of the machine, as Linux reports it.
        #expect(run.first(containing: "ACPI: RSDP 0x00000000000E0000") != nil, "\(context)")
        #expect(run.first(containing: "PCI host bridge to bus 0000:00") != nil, "\(context)")
        // SMP: the application processor started through INIT/SIPI on the in-kernel LAPIC, in the same
        // package as CPU 0 (CPUID's topology leaves), without a paravirtual IPI hypercall (docs/compat.md).
        #expect(run.first(containing: "smp: Brought up 1 node, 2 CPUs") != nil, "\(context)")
        #expect(run.first(containing: "Converting physical") == nil, "both CPUs in one package: \(context)")
        // Linux's own drivers finding each device.
        #expect(run.first(containing: "virtio_blk virtio0: [vda] 16384 512-byte logical blocks") != nil, "\(context)")
        if let queues = run.first(containing: "default/read/poll queues") {  // printed by kernels since 5.16
            #expect(queues.text.contains("2/0/0"), "virtio-blk with two request queues: \(queues.text)")
        }
        #expect(run.first(containing: "IP-Config: Complete:") != nil, "virtio-net (eth0) came up: \(context)")
        #expect(run.first(containing: "ttyS0 at I/O 0x3f8") != nil, "\(context)")
        // hvc0: the kernel's log also went through virtio-console.
        let hvc = (try? String(contentsOfFile: console, encoding: .utf8)) ?? ""
        #expect(hvc.contains("Run /init as init process") || hvc.contains("Freeing unused kernel"), "hvc0 output: \(hvc.suffix(500))")
        // virtio-rng: the kernel's hwrng core read from it (the VMM's device counters, logged at -v).
        #expect(run.stderr.contains("rng: ") && !run.stderr.contains("rng: 0 requests"), "virtio-rng was read: \(run.stderr.suffix(2000))")
        run.report("microVM kernel", marker: Self.runInit)
    }

    /// Debian's cloud kernel, unmodified, with exactly the issue's command line (no workaround flags from the
    /// user: compatibility mode adds its own). `file` is `vmlinuz` (bzImage, 64-bit boot protocol) or
    /// `vmlinux` (ELF, PVH).
    @Test(.enabled(if: LinuxHarness.selection == "all" || LinuxHarness.selection == "debian",
                   "Debian's kernel takes 11–12 min per format here: ACTOR_VMM_LINUX=all to run it"),
          .timeLimit(.minutes(30)), arguments: ["vmlinuz", "vmlinux"])
    func debianCloudKernelRunsInit(file: String) async throws {
        let guest = try await Harness.offPool { try LinuxHarness.recipe("debian-guest.sh") }
        let run = try await Harness.offPool { LinuxHarness.oneAtATime { LinuxHarness.run([
            "--kernel", guest + "/" + file, "--initramfs", guest + "/initramfs.cpio",
            "--cpus", "boot=1", "--memory", "size=512M", "--serial", "tty", "--console", "off",
            "--cmdline", "console=ttyS0", "-v",
        ], until: Self.stopMarker, timeout: 1500) } }
        let context = run.context
        #expect(run.stderr.contains(file == "vmlinuz" ? "loaded (bzImage" : "loaded (PVH)"), "\(context)")
        Self.expectTheEnd(run)
        // The E820 map, the ACPI tables and the PCI root that ActorVMM described.
        for line in ["BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
                     "BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable",
                     "ACPI: RSDP 0x00000000000E0000", "ACPI: XSDT 0x", "ACPI: FACP 0x", "ACPI: DSDT 0x",
                     "ACPI: APIC 0x", "ACPI: MCFG 0x", "PCI host bridge to bus 0000:00",
                     "pci_bus 0000:00: root bus resource [mem 0xc0000000-0xe7ffffff window]"] {
            #expect(run.first(containing: line) != nil, "missing '\(line)': \(context)")
        }
        run.report("Debian cloud kernel (\(file))", marker: Self.runInit)
    }
}

extension LinuxHarness {
    /// `ACTOR_VMM_LINUX`: "0" no Linux boot, "all" (or "debian") the Debian kernel too; else the microVM kernel.
    static let selection = ProcessInfo.processInfo.environment["ACTOR_VMM_LINUX"] ?? "microvm"
}

extension LinuxHarness.Run {
    /// What a failed expectation shows: the end of the guest's log and of the VMM's.
    var context: String {
        "after \(Int(seconds)) s, exit \(status)\n\(transcript.suffix(6000))\nstderr:\n\(stderr.suffix(3000))"
    }

    func report(_ what: String, marker: String) {
        if let line = first(containing: marker) {
            print("\(what): '\(marker)' after \(String(format: "%.1f", line.time)) s")
        }
    }
}
