import Foundation
import Synchronization
import Glibc

/// Runs the real `actor-vmm` binary and the project's test guest on /dev/kvm.
enum Harness {
    static let kvmAvailable = access("/dev/kvm", R_OK | W_OK) == 0

    /// The package root (this file is Tests/EndToEndTests/Harness.swift).
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// `actor-vmm`, built beside the test bundle by `swift build`/`swift test`.
    static let vmmPath: String = {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("actor-vmm").path
    }()

    /// Builds the test guest when stale (Tests/Guest/build.sh) and returns the ELF's path.
    static let guestPath: String = {
        let result = run("/bin/bash", [packageRoot + "/Tests/Guest/build.sh"], timeout: 600)
        precondition(result.status == 0, "Tests/Guest/build.sh failed: \(result.stderr)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        let timedOut: Bool
        /// The process ended by a signal (`status` is then the signal's number).
        var uncaughtSignal = false
        var lines: [String] { stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .init(charactersIn: "\r")) } }
    }

    /// Runs `path` with `arguments` (and `stdin` as its input), killing it after `timeout` seconds.
    /// `afterStart` may signal it.
    static func run(_ path: String, _ arguments: [String], timeout: Double = 120, stdin: String? = nil,
                    environment: [String: String] = [:], afterStart: ((Int32) -> Void)? = nil) -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let input = Pipe()
        process.standardInput = stdin == nil ? FileHandle.nullDevice : input
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch { return Result(status: -1, stdout: "", stderr: "\(error)", timedOut: false) }
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try? input.fileHandleForWriting.close()
        }
        let pid = process.processIdentifier
        let watchdog = Watchdog(killing: pid, after: timeout)
        afterStart?(pid)
        // Both pipes are drained at once: a VMM blocked on a full stderr pipe would never close stdout.
        let stderrBox = Mutex(Data())
        let stderrDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let data = err.fileHandleForReading.readDataToEndOfFile()
            stderrBox.withLock { $0 = data }
            stderrDone.signal()
        }
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        stderrDone.wait()
        process.waitUntilExit()
        let timedOut = watchdog.cancel()
        let stderrData = stderrBox.withLock { $0 }
        return Result(status: process.terminationStatus, stdout: String(decoding: stdoutData, as: UTF8.self),
                      stderr: String(decoding: stderrData, as: UTF8.self), timedOut: timedOut,
                      uncaughtSignal: process.terminationReason == .uncaughtSignal)
    }

    /// Runs the VMM with the test guest and `tests`, plus extra arguments.
    static func runGuest(tests: String, _ extra: [String] = [], memory: String = "64M") -> Result {
        run(vmmPath, ["--kernel", guestPath, "--cmdline", "tests=\(tests)", "--memory", "size=\(memory)",
                      "--cpus", "boot=1", "--serial", "tty", "--console", "off"] + extra)
    }

    /// Writes a minimal ELF64 kernel whose code is `code` at 0x200000 and returns its path.
    static func writeTinyKernel(_ name: String, code: [UInt8]) -> String {
        var b = [UInt8](repeating: 0, count: 120)
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } } }
        b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 2; b[5] = 1; b[6] = 1
        put(UInt16(2), 16); put(UInt16(62), 18); put(UInt32(1), 20); put(UInt64(0x200000), 24); put(UInt64(64), 32)
        put(UInt16(64), 52); put(UInt16(56), 54); put(UInt16(1), 56)
        put(UInt32(1), 64); put(UInt32(5), 68); put(UInt64(120), 72); put(UInt64(0x200000), 80); put(UInt64(0x200000), 88)
        put(UInt64(code.count), 96); put(UInt64(code.count), 104)
        let path = NSTemporaryDirectory() + "actor-vmm-\(getpid())-\(name).elf"
        _ = FileManager.default.createFile(atPath: path, contents: Data(b + code))
        return path
    }
}

extension Harness {
    /// Runs blocking `work` (a guest waited for for minutes, a cached build) on a thread of its own. Swift
    /// Testing runs tests on the cooperative pool, which has one thread per core (two here): a test blocking
    /// one of them for minutes starves every other test meanwhile, and their time limits and `eventually`
    /// deadlines then fail.
    static func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Swift.Result { try work() }) }
        }
    }
}

extension Harness {
    /// Kills a process with SIGKILL unless cancelled within `seconds`. It waits on a thread of its own, not on
    /// a Dispatch queue: the global queues have one worker per core (one in the nested tier's L1), and a test
    /// that blocks them (pipe reads, a process monitor) must not also hold back the deadline that would end
    /// the block.
    final class Watchdog: Sendable {
        private let cancelled = DispatchSemaphore(value: 0)
        private let fired = Atomic<Bool>(false)

        init(killing pid: pid_t, after seconds: Double) {
            Thread.detachNewThread { [self] in
                if cancelled.wait(timeout: .now() + seconds) == .timedOut {
                    fired.store(true, ordering: .sequentiallyConsistent)
                    kill(pid, SIGKILL)
                }
            }
        }

        /// Stops the watchdog; true if it had already killed the process.
        @discardableResult
        func cancel() -> Bool {
            cancelled.signal()
            return fired.load(ordering: .sequentiallyConsistent)
        }
    }
}
