import Foundation
import Glibc
import Testing

/// `actor-vmm` as a person runs it: typed into a terminal (stdin and stdout a terminal, here a pty), or with
/// its output piped into something that stops reading. The rest of the suite runs it with stdin not a
/// terminal, which is how the `SA_RESETHAND` trap in raw-mode set-up went unseen.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"), .serialized)
struct TerminalTests {
    /// The README's demo in a terminal: raw mode while the guest runs (typed keys, Ctrl-C included, go to the
    /// guest's UART and nothing is echoed by the host), the terminal's settings restored at exit.
    @Test func serialOnATerminalTakesTypingAndRestoresTheTerminal() throws {
        let pty = try Pty()
        let before = pty.settings
        let process = try pty.spawn(Harness.vmmPath, [
            "--kernel", Harness.guestPath, "--cmdline", "tests=serialin,cmdline", "--memory", "size=64M",
            "--serial", "tty", "--console", "off"])
        let ready = pty.read(timeout: 60) { $0.contains("SERIALIN READY") }
        #expect(ready, "screen: \(pty.screen)")
        let during = pty.settings
        #expect(during.c_lflag & tcflag_t(ICANON | ECHO | ISIG) == 0, "not in raw mode while the guest runs")
        pty.type("hi\u{03}\r")  // Ctrl-C is a byte for the guest, not a signal for the VMM
        #expect(pty.wait(for: process, timeout: 90), "still running; screen: \(pty.screen)")
        #expect(process.terminationStatus == 0, "screen: \(pty.screen)")
        #expect(pty.screen.contains("TEST serialin PASS got=686903"), "screen: \(pty.screen)")
        #expect(pty.screen.contains("TESTGUEST DONE pass=2 fail=0"), "screen: \(pty.screen)")
        #expect(!pty.screen.contains("hi\u{03}"), "the host echoed the typing")
        #expect(pty.settings.modeFlags == before.modeFlags, "terminal settings not restored")
    }

    /// `--console tty` (Cloud Hypervisor's default) on a terminal: the guest's hvc0 output reaches it.
    @Test func consoleOnATerminal() throws {
        let pty = try Pty()
        let before = pty.settings
        let process = try pty.spawn(Harness.vmmPath, [
            "--kernel", Harness.guestPath, "--cmdline", "tests=console", "--memory", "size=64M",
            "--serial", "off", "--console", "tty"])
        #expect(pty.wait(for: process, timeout: 90), "still running; screen: \(pty.screen)")
        #expect(process.terminationStatus == 0, "screen: \(pty.screen)")
        #expect(pty.screen.contains("hello from hvc0"), "screen: \(pty.screen)")
        #expect(pty.settings.modeFlags == before.modeFlags, "terminal settings not restored")
    }

    /// Exactly what a person's shell does, through `script` (which gives the command a terminal).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "needs script(1) (util-linux)"))
    func readmeDemoUnderScript() {
        let command = "\(Harness.vmmPath) --kernel \(Harness.guestPath) --cmdline tests=serial,cmdline --memory size=64M --serial tty --console off"
        let result = Harness.run("/usr/bin/script", ["-qec", command, "/dev/null"], timeout: 90)
        #expect(result.status == 0, "stdout: \(result.stdout) stderr: \(result.stderr)")
        #expect(result.stdout.contains("TESTGUEST DONE pass=2 fail=0"), "stdout: \(result.stdout)")
    }

    /// Output into a pipe that nobody reads must not stall the guest: the guest writes more than the pipe
    /// holds, still finishes and powers off, and the VMM exits 0 saying how much was left unwritten.
    @Test func serialOutputNobodyReadsDoesNotStallTheVm() throws {
        let (process, stderrPath, pipe) = try Self.spawnWithUnreadStdout([
            "--kernel", Harness.guestPath, "--cmdline", "tests=serialflood flood_bytes=100000",
            "--memory", "size=64M", "--serial", "tty", "--console", "off"])
        defer { unlink(stderrPath) }
        let ended = Self.wait(process, timeout: 90)
        withExtendedLifetime(pipe) {}
        let stderr = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        #expect(ended, "the VMM is stuck behind its unread output; stderr: \(stderr)")
        #expect(process.terminationStatus == 0, "stderr: \(stderr)")
        #expect(stderr.contains("not read"), "stderr: \(stderr)")
    }

    /// And a stop signal still stops such a VM promptly.
    @Test func sigtermStopsAVmWhoseOutputNobodyReads() throws {
        let (process, stderrPath, pipe) = try Self.spawnWithUnreadStdout([
            "--kernel", Harness.guestPath, "--cmdline", "tests=serialflood flood_bytes=100000000",
            "--memory", "size=64M", "--serial", "tty", "--console", "off"])
        defer { unlink(stderrPath) }
        sleep(3)  // by now the pipe is full
        let signalled = Date()
        kill(process.processIdentifier, SIGTERM)
        let ended = Self.wait(process, timeout: 30)
        withExtendedLifetime(pipe) {}
        let stderr = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        #expect(ended, "SIGTERM did not stop the VMM; stderr: \(stderr)")
        #expect(process.terminationStatus == 0, "stderr: \(stderr)")
        #expect(Date().timeIntervalSince(signalled) < 10)
    }

    /// Starts the VMM with stdout into a pipe that is kept open and never read; stderr goes to a file.
    static func spawnWithUnreadStdout(_ arguments: [String]) throws -> (Process, String, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.vmmPath)
        process.arguments = arguments
        let pipe = Pipe()
        let stderrPath = NSTemporaryDirectory() + "actor-vmm-unread-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).err"
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = pipe
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
        return (process, stderrPath, pipe)
    }

    /// Waits for `process` to end; kills it and returns false after `timeout` seconds.
    static func wait(_ process: Process, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        guard !process.isRunning else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return false
        }
        process.waitUntilExit()
        return true
    }
}
