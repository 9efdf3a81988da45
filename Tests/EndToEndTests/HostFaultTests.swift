import Foundation
import Glibc
import Testing

/// Faults of the host under the real binary: no memory for the guest, standard descriptors closed, output
/// to a pipe whose reader has gone. (Disk and TAP faults are injected at the device: DevicesTests.)
@Suite(.serialized) struct HostFaultEndToEndTests {
    /// Out of memory at create (an address-space limit the guest's RAM does not fit in): one line naming the
    /// option or field, exit code 2 on the command line, 400 through the API, and nothing half-created.
    @Test func outOfMemoryAtCreate() throws {
        let kernel = Harness.writeTinyKernel("oom", code: [0xEB, 0xFE])
        defer { unlink(kernel) }
        let limit = "ulimit -v 1500000;"  // KiB: enough for the VMM itself, not for 2 GiB of guest RAM
        let cli = Harness.run("/bin/sh", ["-c", "\(limit) exec \"$0\" --kernel \"$1\" --memory size=2G --serial off",
                                          Harness.vmmPath, kernel], timeout: 30)
        #expect(cli.status == 2 && cli.stderr == "actor-vmm: error: --memory size=2048M: cannot allocate 2048 MiB of guest RAM: Cannot allocate memory\n",
                "\(cli.status) \(cli.stderr)")

        let socket = "/tmp/actor-vmm-e2e-\(getpid())-oom.sock"
        let body = Harness.vmConfig(kernel: kernel, memory: 2 << 30)
        let script = """
            \(limit) "$0" --api-socket path="$1" & pid=$!
            for i in $(seq 100); do [ -S "$1" ] && break; sleep 0.05; done
            curl -s --unix-socket "$1" -X PUT -d "$2" http://localhost/api/v1/vm.create; echo
            curl -s --unix-socket "$1" http://localhost/api/v1/vm.info; echo
            curl -s --unix-socket "$1" http://localhost/api/v1/vmm.ping >/dev/null && echo alive
            curl -s --unix-socket "$1" -X PUT http://localhost/api/v1/vmm.shutdown
            wait $pid; echo "exit $?"
            """
        guard access("/usr/bin/curl", X_OK) == 0 else { return }  // the command-line half above still ran
        let api = Harness.run("/bin/bash", ["-c", script, Harness.vmmPath, socket, body], timeout: 60)
        #expect(api.lines == [#"["invalid VM configuration","memory.size: cannot allocate 2048 MiB of guest RAM: Cannot allocate memory"]"#,
                              #"["no VM information","no VM has been created"]"#, "alive", "exit 0"], "\(api.stdout)\(api.stderr)")
    }

    /// Started with stdin and stdout closed, the VMM parks /dev/null on them, so nothing it opens later (an
    /// epoll instance, a disk image) takes descriptor 0 or 1 and receives terminal input or serial output.
    @Test func closedStandardDescriptorsAreNotReused() throws {
        let socket = "/tmp/actor-vmm-e2e-\(getpid())-closed.sock"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec \"$0\" --api-socket path=\"$1\" <&- >&-", Harness.vmmPath, socket]
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(Harness.eventually { access(socket, F_OK) == 0 })
        let pid = process.processIdentifier
        for fd in [0, 1] {
            let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")
            #expect(target == "/dev/null", "fd \(fd): \(target ?? "closed")")
        }
        kill(pid, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    /// Serial output on a pipe whose reader has exited (SIGPIPE, then EPIPE on every write), and on a closed
    /// stdout: the guest runs to the end and the VMM exits with the guest's status.
    @Test(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write)"), arguments: ["| true", ">&-"])
    func serialOutputWithNobodyToReadIt(redirect: String) {
        let command = "\"$0\" --kernel \"$1\" --cmdline tests=serial,cmdline,pio --memory size=64M --serial tty --console off \(redirect)"
        let result = Harness.run("/bin/bash", ["-c", "\(command); echo \"exit ${PIPESTATUS[0]}\"", Harness.vmmPath, Harness.guestPath])
        #expect(result.stdout == "exit 0\n", "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
    }
}
