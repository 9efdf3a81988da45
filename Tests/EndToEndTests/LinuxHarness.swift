import Foundation
import Glibc
import Synchronization

/// Runs Linux guests: prepares them with the recipes in Tests/Linux, runs the VMM until the kernel prints
/// the line that ends the check, then stops it with SIGTERM (a clean exit) — so nothing hangs.
enum LinuxHarness {
    /// A line of guest output and when it arrived (seconds since the VMM started).
    struct Line {
        let time: Double
        let text: String
    }

    struct Run {
        let lines: [Line]
        let stderr: String
        let status: Int32
        let stoppedOnMarker: Bool
        let seconds: Double
        func first(containing text: String) -> Line? { lines.first { $0.text.contains(text) } }
        var transcript: String { lines.map { String(format: "[%7.2f] ", $0.time) + $0.text }.joined(separator: "\n") }
    }

    /// Runs `body` while no other heavy guest runs in this process: the microVM boot on an emulating host
    /// (2 vCPUs, which crawl when another VM competes for the 2 cores, docs/boot.md) and the nested tier's
    /// L1 (a host core under QEMU's emulation) take turns.
    static func oneAtATime<T>(_ body: () throws -> T) rethrows -> T {
        try heavyGuest.withLock { try body() }
    }
    private static let heavyGuest = NSLock()

    /// Runs a recipe script (building on first use) and returns the folder it prints.
    static func recipe(_ name: String, _ arguments: [String] = []) throws -> String {
        let result = Harness.run("/bin/bash", [Harness.packageRoot + "/Tests/Linux/" + name] + arguments, timeout: 3000)
        guard result.status == 0 else {
            throw RecipeError(message: "Tests/Linux/\(name) failed (exit \(result.status)):\n\(result.stderr.suffix(3000))")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct RecipeError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// A running VMM as `run`'s `then` sees it: its pid and the guest's output so far.
    final class Session: Sendable {
        let pid: Int32
        fileprivate let seen = Mutex<[String]>([])
        init(pid: Int32) { self.pid = pid }
        /// Waits until `count` lines containing `text` have arrived; false after `timeout` seconds.
        func waitForLine(_ text: String, count: Int = 1, timeout: Double) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if seen.withLock({ $0.filter { $0.contains(text) }.count >= count }) { return true }
                usleep(100_000)
            }
            return false
        }
    }

    /// Runs `actor-vmm arguments` until a stdout line contains `marker` (then SIGTERM, or `then` runs on
    /// another thread while the output is still read: it ends the VMM itself), the VMM exits by itself (a
    /// `nil` marker waits for that), or `timeout` passes (then SIGKILL); returns every line with its
    /// arrival time.
    static func run(_ arguments: [String], until marker: String?, timeout: Double,
                    then: (@Sendable (Session) -> Void)? = nil) -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.vmmPath)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let start = Date()
        do { try process.run() } catch { return Run(lines: [], stderr: "\(error)", status: -1, stoppedOnMarker: false, seconds: 0) }
        let pid = process.processIdentifier
        let watchdog = Harness.Watchdog(killing: pid, after: timeout)
        let stderrBox = Mutex(Data())
        let errReader = Thread { stderrBox.withLock { $0 = err.fileHandleForReading.readDataToEndOfFile() } }
        errReader.start()

        let session = Session(pid: pid)
        var lines: [Line] = []
        var pending = Data()
        var sawMarker = false
        let handle = out.fileHandleForReading
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let text = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    .trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
                pending.removeSubrange(pending.startIndex...newline)
                lines.append(Line(time: Date().timeIntervalSince(start), text: text))
                session.seen.withLock { $0.append(text) }
                if !sawMarker, let marker, text.contains(marker) {
                    sawMarker = true
                    if let then { Thread { then(session) }.start() } else { kill(pid, SIGTERM) }
                }
            }
        }
        process.waitUntilExit()
        watchdog.cancel()
        while errReader.isExecuting { usleep(1000) }
        let stderrText = String(decoding: stderrBox.withLock { $0 }, as: UTF8.self)
        return Run(lines: lines, stderr: stderrText, status: process.terminationStatus,
                   stoppedOnMarker: sawMarker, seconds: Date().timeIntervalSince(start))
    }
}
