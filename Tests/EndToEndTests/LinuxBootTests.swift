import Foundation
import Glibc
import Testing

/// Linux on this host (docs/boot.md): the microVM test kernel built from Debian's linux-source-6.1
/// (Tests/Linux/microvm-kernel.sh; built once into a cache) boots through PVH with every virtio device
/// attached, and its own drivers must find them, up to "Run /init as init process" — the last thing a
/// Linux guest can do here, where user space cannot make system calls (docs/compat.md). The harness stops
/// the VMM with SIGTERM once it has seen that line.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"),
       .enabled(if: ProcessInfo.processInfo.environment["ACTOR_VMM_LINUX"] != nil,
                "set ACTOR_VMM_LINUX=1 to build (once, ~5 min) and boot the microVM kernel (minutes on a nested host)"),
       .serialized)
struct LinuxBootTests {
    static let runInit = "Run /init as init process"

    @Test(.timeLimit(.minutes(30)))
    func microvmKernelFindsEveryDeviceAndRunsInit() throws {
        let kernel = try LinuxHarness.recipe("microvm-kernel.sh")
        let prefix = NSTemporaryDirectory() + "actor-vmm-linux-\(getpid())"
        let disk = prefix + "-disk.raw", console = prefix + "-console.txt"
        defer { unlink(disk); unlink(console) }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 8 << 20)))
        let tap = "avml\(getpid() % 100_000)"
        let run = LinuxHarness.run([
            "--kernel", kernel + "/vmlinux", "--initramfs", kernel + "/initramfs.cpio",
            "--cpus", "boot=1", "--memory", "size=512M", "--serial", "tty", "--console", "file=\(console)",
            "--disk", "path=\(disk)", "--rng",
            "--net", "tap=\(tap),mac=52:54:00:12:34:57,ip=192.168.250.1,mask=255.255.255.0",
            "--cmdline", "console=ttyS0 console=hvc0 ip=192.168.250.2::192.168.250.1:255.255.255.0::eth0:off",
            "-v",
        ], until: Self.runInit, timeout: 900)
        let context = "after \(Int(run.seconds)) s, exit \(run.status)\n\(run.transcript.suffix(6000))\nstderr:\n\(run.stderr.suffix(3000))"
        #expect(run.stoppedOnMarker, "never printed '\(Self.runInit)': \(context)")
        #expect(run.status == 0, "a SIGTERM'd VMM exits 0: \(context)")
        // ActorVMM's description of the machine, as Linux reports it.
        #expect(run.first(containing: "ACPI: RSDP 0x00000000000E0000") != nil, "\(context)")
        #expect(run.first(containing: "PCI host bridge to bus 0000:00") != nil, "\(context)")
        // Linux's own drivers finding each device.
        #expect(run.first(containing: "virtio_blk virtio0: [vda] 16384 512-byte logical blocks") != nil, "\(context)")
        #expect(run.first(containing: "IP-Config: Complete:") != nil, "virtio-net (eth0) came up: \(context)")
        #expect(run.first(containing: "ttyS0 at I/O 0x3f8") != nil, "\(context)")
        // hvc0: the kernel's log also went through virtio-console.
        let hvc = (try? String(contentsOfFile: console, encoding: .utf8)) ?? ""
        #expect(hvc.contains("Run /init as init process") || hvc.contains("Freeing unused kernel"), "hvc0 output: \(hvc.suffix(500))")
        // virtio-rng: the kernel's hwrng core read from it (the VMM's device counters, logged at -v).
        #expect(run.stderr.contains("rng: ") && !run.stderr.contains("rng: 0 requests"), "virtio-rng was read: \(run.stderr.suffix(2000))")
        if let line = run.first(containing: Self.runInit) {
            print("microVM kernel: '\(Self.runInit)' after \(String(format: "%.1f", line.time)) s")
        }
    }
}
