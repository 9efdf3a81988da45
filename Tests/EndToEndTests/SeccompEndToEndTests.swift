import Foundation
import Glibc
import Testing

/// The seccomp filters in the real binary (docs/security.md). `ACTOR_VMM_SECCOMP_SELFTEST=<kind>` makes a
/// thread of that kind call `getppid` (system call 110, in no list) right after installing its filter. Every other
/// end-to-end test runs with the filters on too (the default), which checks the normal paths.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"), .serialized)
struct SeccompEndToEndTests {
    /// Each kind and the name its thread reports under (the main thread has the program's name).
    static let kinds = [("vmm", "actor-vmm"), ("vcpu", "vcpu0"), ("device", "vmm-devices"), ("api", "vmm-api")]

    static func run(kind: String, _ extra: [String], afterStart: ((Int32) -> Void)? = nil) -> Harness.Result {
        let socket = "/tmp/actor-vmm-seccomp-\(getpid())-\(kind).sock"
        defer { unlink(socket) }
        return Harness.run(Harness.vmmPath, [
            "--kernel", Harness.guestPath, "--cmdline", "tests=serial", "--memory", "size=64M", "--serial", "tty",
            "--console", "off", "--api-socket", "path=\(socket)",
        ] + extra, timeout: 60, environment: ["ACTOR_VMM_SECCOMP_SELFTEST": kind], afterStart: afterStart)
    }

    /// `--seccomp true` (the default): the call is refused, reported with the thread and the call, and the
    /// process ends by SIGSYS before the guest has run (every filter is on before the first KVM_RUN).
    @Test(arguments: kinds)
    func aForbiddenCallEndsTheVmm(kind: String, thread: String) {
        let result = Self.run(kind: kind, [])
        let context = "status \(result.status), stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)"
        #expect(result.uncaughtSignal && result.status == SIGSYS, "\(context)")
        let report = "actor-vmm: error: seccomp: thread '\(thread)' made system call 110 (getppid), which its seccomp filter does not allow"
        #expect(result.stderr.contains(report), "\(context)")
        #expect(!result.stdout.contains("TESTGUEST START"), "the guest ran: \(context)")
    }

    /// `--seccomp log`: the call is made and logged by the kernel; the VM runs to its end.
    @Test(arguments: kinds)
    func withLogTheCallIsOnlyLogged(kind: String, thread: String) {
        nonisolated(unsafe) var pid: Int32 = 0
        let result = Self.run(kind: kind, ["--seccomp", "log"]) { pid = $0 }
        let context = "status \(result.status), stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)"
        #expect(result.status == 0 && !result.uncaughtSignal, "\(context)")
        #expect(result.lines.contains("TESTGUEST DONE pass=1 fail=0"), "\(context)")
        #expect(!result.stderr.contains("seccomp: thread"), "\(context)")
        // The audit record, where this host lets us read the kernel log.
        let dmesg = Harness.run("/bin/dmesg", [], timeout: 30)
        if dmesg.status == 0, !dmesg.stdout.isEmpty {
            let record = dmesg.lines.first {
                $0.contains("type=1326") && $0.contains("pid=\(pid) ") && $0.contains(" syscall=110 ")
            }
            #expect(record?.contains("comm=\"\(thread)\"") == true, "no audit record of pid \(pid)'s getppid in dmesg")
        }
    }

    /// `--seccomp false`: no filters, so the same call is just a call.
    @Test func falseInstallsNoFilter() {
        let result = Self.run(kind: "vcpu", ["--seccomp", "false", "-v"])
        #expect(result.status == 0 && result.lines.contains("TESTGUEST DONE pass=1 fail=0"), "\(result.stderr)")
        #expect(!result.stderr.contains("seccomp: filters on"))
        let on = Self.run(kind: "none", ["-v"])
        #expect(on.status == 0 && on.stderr.contains("seccomp: filters on (--seccomp true)"), "\(on.stderr)")
    }

    @Test func aBadValueIsOneLineAndExitCode2() {
        let result = Harness.run(Harness.vmmPath, ["--kernel", Harness.guestPath, "--seccomp", "yes"], timeout: 30)
        #expect(result.status == 2)
        #expect(result.stderr == "actor-vmm: error: --seccomp yes: expected true, false or log\n")
    }
}
