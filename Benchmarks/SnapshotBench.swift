// Row 6: snapshot, restore and live migration of the real `actor-vmm` release binary (issue 14's figures),
// driven through its API socket like `actor-vmm-remote` does, with the test guest's `dirty` check:
// `dirty_mb=0` an idle guest (it only prints `BEAT n` every ~2 ms), `dirty_mb=N` a guest that keeps
// writing every word of N MiB of its RAM (`rep stosq`), beating between pages.
//
// - Snapshot: the guest has beaten (and, dirtying, filled its N MiB once); `vm.pause` and `vm.snapshot`
//   timed by the client (each from sending the request to the answer); the sizes of state.bin and of
//   memory.bin (apparent and allocated: zero pages are holes). The VMM is shut down.
// - Restore: from `posix_spawn` of `actor-vmm --restore source_url=file://DIR,resume=on` to the serial file
//   growing again (the restored guest's next byte; the file is polled every 100 µs).
// - Migration: a second `actor-vmm` waits in `vm.receive-migration` (unix: socket); `vm.send-migration`
//   timed by the client; rounds, pages per round, bytes sent, downtime (pause to the destination's
//   acknowledgement) and total from the line the source logs at info (`-v --log-file`,
//   `MigrationReport.description`); then the time from the answer to the serial file growing again.
import ActorVmm
import Cli
import EpollLoop
import Glibc
import Synchronization

/// One guest set-up: RAM size and how much of it the guest keeps writing (0: idle).
struct SnapshotCase: Sendable {
    var memoryMiB: Int
    var dirtyMiB: Int
    var id: String { "\(memoryMiB)m-" + (dirtyMiB == 0 ? "idle" : "dirty\(dirtyMiB)m") }
    var label: String {
        (memoryMiB >= 1024 ? "\(memoryMiB / 1024) GiB" : "\(memoryMiB) MiB") + ", "
            + (dirtyMiB == 0 ? "idle guest" : "guest writing \(dirtyMiB) MiB")
    }
}

struct SnapshotSample: Sendable {
    var pauseMs: Double
    var snapshotMs: Double
    var stateBytes: Double
    var memoryBytes: Double
    var memoryAllocatedBytes: Double
    var restoreMs: Double
}

struct MigrationSample: Sendable {
    var requestMs: Double
    var totalMs: Double
    var downtimeMs: Double
    var rounds: Double
    var bytesSent: Double
    var pagesPerRound: [Int]
    var runningAgainMs: Double
}

struct SnapshotResults: Sendable {
    var snapshots: [(SnapshotCase, Result<[SnapshotSample], BenchError>)] = []
    var migrations: [(SnapshotCase, Result<[MigrationSample], BenchError>)] = []
}

struct SnapshotBench {
    let vmmPath: String
    let guestPath: String
    let runs: Int
    let snapshotCases: [SnapshotCase]
    let migrationCases: [SnapshotCase]
    /// TSC cycles between the guest's beats (about 2 ms at 2.6 GHz; each beat costs the emulated guest ~0.5 ms).
    static let beatCycles = 5_000_000

    /// Runs every case `runs` times, interleaved (run r goes through all cases before run r + 1).
    func run(progress: (String) -> Void) -> SnapshotResults {
        let directory = "/tmp/actor-vmm-bench-snap-\(getpid())"
        try? makeDirectories(directory)
        defer { _ = runProcess(["/bin/rm", "-rf", directory]) }
        var snapshots = snapshotCases.map { _ in [SnapshotSample]() }
        var migrations = migrationCases.map { _ in [MigrationSample]() }
        var snapshotErrors = snapshotCases.map { _ -> BenchError? in nil }
        var migrationErrors = migrationCases.map { _ -> BenchError? in nil }
        for round in 0..<runs {
            for (index, setup) in snapshotCases.enumerated() where snapshotErrors[index] == nil {
                do {
                    let sample = try snapshotOnce(setup, in: directory + "/s\(index)")
                    snapshots[index].append(sample)
                    progress("snapshot \(setup.label), run \(round + 1)/\(runs): pause \(fixed(sample.pauseMs, 1)) ms, "
                             + "snapshot \(fixed(sample.snapshotMs, 1)) ms, restore \(fixed(sample.restoreMs, 1)) ms")
                } catch {
                    snapshotErrors[index] = error
                    progress("snapshot \(setup.label): \(error)")
                }
            }
            for (index, setup) in migrationCases.enumerated() where migrationErrors[index] == nil {
                do {
                    let sample = try migrateOnce(setup, in: directory + "/m\(index)")
                    migrations[index].append(sample)
                    progress("migration \(setup.label), run \(round + 1)/\(runs): \(Int(sample.rounds)) rounds, "
                             + "downtime \(fixed(sample.downtimeMs, 1)) ms, total \(fixed(sample.totalMs, 1)) ms")
                } catch {
                    migrationErrors[index] = error
                    progress("migration \(setup.label): \(error)")
                }
            }
        }
        var results = SnapshotResults()
        for (index, setup) in snapshotCases.enumerated() {
            results.snapshots.append((setup, snapshotErrors[index].map { .failure($0) } ?? .success(snapshots[index])))
        }
        for (index, setup) in migrationCases.enumerated() {
            results.migrations.append((setup, migrationErrors[index].map { .failure($0) } ?? .success(migrations[index])))
        }
        return results
    }

    /// Starts a source VM with the `dirty` check and waits until it runs (and has filled its stretch once).
    func startSource(_ setup: SnapshotCase, in directory: String, verbose: Bool = false) throws(BenchError) -> VmmUnderTest {
        let cmdline = "tests=dirty dirty_mb=\(setup.dirtyMiB) dirty_beat=\(Self.beatCycles)"
        let vmm = try VmmUnderTest(vmmPath: vmmPath, directory: directory, name: "source", verbose: verbose,
                                   arguments: ["--kernel", guestPath, "--cmdline", cmdline, "--cpus", "boot=1",
                                               "--memory", "size=\(setup.memoryMiB)M", "--console", "off"],
                                   serial: directory + "/serial.txt")
        let ready = setup.dirtyMiB == 0 ? "BEAT 3\n" : "DIRTY FILLED\n"
        try vmm.waitForSerial(ready, seconds: 60 + Double(setup.dirtyMiB) / 2)
        return vmm
    }

    func snapshotOnce(_ setup: SnapshotCase, in directory: String) throws(BenchError) -> SnapshotSample {
        _ = runProcess(["/bin/rm", "-rf", directory])
        try makeDirectories(directory)
        let source = try startSource(setup, in: directory)
        let snapshotDirectory = directory + "/snapshot"
        let pauseMs = try source.call("PUT", "vm.pause").milliseconds
        let snapshotMs = try source.call("PUT", "vm.snapshot", "{\"destination_url\":\"file://\(snapshotDirectory)\"}").milliseconds
        _ = try? source.call("PUT", "vmm.shutdown")
        source.stop()
        let serial = source.serialPath
        let before = fileSize(serial)
        guard let state = fileStat(snapshotDirectory + "/state.bin"), let memory = fileStat(snapshotDirectory + "/memory.bin") else {
            throw BenchError("the snapshot has no state.bin or memory.bin")
        }
        let restored = try VmmUnderTest(vmmPath: vmmPath, directory: directory, name: "restored", verbose: false,
                                        arguments: ["--restore", "source_url=file://\(snapshotDirectory),resume=on"],
                                        serial: serial, waitForApi: false)  // timed from the spawn to the guest's output alone
        defer { restored.stop() }
        let restoreNs = try restored.waitForGrowth(of: serial, beyond: before, since: restored.spawnTime, seconds: 60)
        return SnapshotSample(pauseMs: pauseMs, snapshotMs: snapshotMs, stateBytes: Double(state.st_size),
                              memoryBytes: Double(memory.st_size), memoryAllocatedBytes: Double(memory.st_blocks) * 512,
                              restoreMs: Double(restoreNs) / 1e6)
    }

    func migrateOnce(_ setup: SnapshotCase, in directory: String) throws(BenchError) -> MigrationSample {
        _ = runProcess(["/bin/rm", "-rf", directory])
        try makeDirectories(directory)
        let source = try startSource(setup, in: directory, verbose: true)
        defer { source.stop() }
        let destination = try VmmUnderTest(vmmPath: vmmPath, directory: directory, name: "destination", verbose: false,
                                           arguments: [], serial: nil)
        defer { destination.stop() }
        let socket = directory + "/migration.sock"
        let destinationApi = destination.apiSocket
        let received = Mutex<String?>(nil)
        let receiver = try HostThread(cpu: nil) {
            let answer = ApiCall.send(socketPath: destinationApi, method: "PUT", endpoint: "vm.receive-migration",
                                      body: "{\"receiver_url\":\"unix:\(socket)\"}", timeout: 120)
            received.withLock { $0 = switch answer {
            case .success(let answer): "HTTP \(answer.status) \(answer.body)"
            case .failure(let error): error.description
            } }
        }
        defer {
            destination.stop()  // a receive that never got its source ends with the process
            try? receiver.join()
        }
        let listening = monotonicNanoseconds()
        while access(socket, F_OK) != 0 {
            guard monotonicNanoseconds() - listening < 30_000_000_000 else {
                throw BenchError("the destination never listened on \(socket): \(received.withLock { $0 } ?? "no answer")")
            }
            usleep(1_000)
        }
        let serial = source.serialPath
        // The socket's file exists from bind(), a moment before listen(): retry while the connection is refused.
        var attempt = 0
        var sent: (status: Int, milliseconds: Double)
        while true {
            do {
                sent = try source.call("PUT", "vm.send-migration", "{\"destination_url\":\"unix:\(socket)\"}", timeout: 300)
                break
            } catch where error.description.contains("cannot connect") && attempt < 100 {
                attempt += 1
                usleep(10_000)
            }
        }
        let answered = monotonicNanoseconds()
        let again = try destination.waitForGrowth(of: serial, beyond: fileSize(serial), since: answered, seconds: 30)
        _ = try? source.call("PUT", "vmm.shutdown")
        source.stop()
        guard let line = readTextFile(source.logPath)?.split(separator: "\n").last(where: { $0.contains("VM migrated to") }),
              let report = MigrationLogLine(String(line)) else {
            throw BenchError("the source logged no \"VM migrated to …\" line in \(source.logPath)")
        }
        return MigrationSample(requestMs: sent.milliseconds, totalMs: report.totalMs, downtimeMs: report.downtimeMs,
                               rounds: Double(report.pagesPerRound.count), bytesSent: report.bytesSent,
                               pagesPerRound: report.pagesPerRound, runningAgainMs: Double(again) / 1e6)
    }
}

/// The source's "VM migrated to unix:…: 3 rounds (pages 29/4/1), 139264 bytes sent, downtime 16.042 ms,
/// total 78.310 ms" (`MigrationReport.description`).
struct MigrationLogLine {
    var pagesPerRound: [Int]
    var bytesSent: Double
    var downtimeMs: Double
    var totalMs: Double

    init?(_ line: String) {
        func number(after key: String, in text: Substring) -> Substring? {
            guard let range = text.firstRange(of: key) else { return nil }
            return text[range.upperBound...].prefix { $0.isNumber || $0 == "." || $0 == "/" }
        }
        let text = Substring(line)
        guard let pages = number(after: "(pages ", in: text), let bytes = number(after: "), ", in: text).flatMap({ Double($0) }),
              let downtime = number(after: "downtime ", in: text).flatMap({ Double($0) }),
              let total = number(after: "total ", in: text).flatMap({ Double($0) }) else { return nil }
        pagesPerRound = pages.split(separator: "/").compactMap { Int($0) }
        bytesSent = bytes
        downtimeMs = downtime
        totalMs = total
    }
}

/// `stat` of a path, or nil.
func fileStat(_ path: String) -> stat? {
    var info = stat()
    return stat(path, &info) == 0 ? info : nil
}

/// A file's size in bytes (0 if it does not exist).
func fileSize(_ path: String) -> Int { fileStat(path).map { Int($0.st_size) } ?? 0 }

/// An `actor-vmm` child with an API socket, its log at info in a file and, if given, the guest's serial
/// output in a file (appended to: a restored or migrated guest goes on in the same file).
final class VmmUnderTest {
    let child: Child
    let apiSocket: String
    let logPath: String
    let serialPath: String
    var spawnTime: UInt64 { child.spawnTime }

    /// Starts it and, unless `waitForApi` is false, returns once its API answers.
    init(vmmPath: String, directory: String, name: String, verbose: Bool, arguments: [String], serial: String?,
         waitForApi: Bool = true) throws(BenchError) {
        apiSocket = directory + "/\(name).api"
        logPath = directory + "/\(name).log"
        serialPath = serial ?? directory + "/\(name).serial"
        unlink(apiSocket)
        var all = [vmmPath, "--api-socket", "path=\(apiSocket)", "--log-file", logPath] + (verbose ? ["-v"] : [])
        if serial != nil, !arguments.contains("--restore") { all += ["--serial", "file=\(serialPath)"] }
        child = try Child(arguments: all + arguments)
        guard waitForApi else { return }
        let start = monotonicNanoseconds()
        while access(apiSocket, F_OK) != 0 {
            var status: Int32 = 0
            if waitpid(child.pid, &status, WNOHANG) == child.pid {
                throw BenchError("actor-vmm (\(name)) exited: \(readTextFile(logPath) ?? "")\(readAll(child.errorFD))")
            }
            guard monotonicNanoseconds() - start < 30_000_000_000 else { throw BenchError("actor-vmm (\(name)) has no API socket after 30 s") }
            usleep(200)
        }
        // The file exists from bind(), a moment before listen(): ready once it answers.
        while case .failure(let error) = ApiCall.send(socketPath: apiSocket, method: "GET", endpoint: "vmm.ping", timeout: 10) {
            guard monotonicNanoseconds() - start < 30_000_000_000 else { throw BenchError("actor-vmm (\(name)): \(error)") }
            usleep(200)
        }
    }

    /// One API request; throws unless it succeeds (2xx). Returns the time from sending to the answer.
    @discardableResult
    func call(_ method: String, _ endpoint: String, _ body: String? = nil, timeout: Int = 120) throws(BenchError) -> (status: Int, milliseconds: Double) {
        let start = monotonicNanoseconds()
        let answer: ApiCall.Answer
        switch ApiCall.send(socketPath: apiSocket, method: method, endpoint: endpoint, body: body, timeout: timeout) {
        case .success(let value): answer = value
        case .failure(let error): throw BenchError("\(error)")
        }
        let elapsed = Double(monotonicNanoseconds() - start) / 1e6
        guard (200..<300).contains(answer.status) else { throw BenchError("\(endpoint): HTTP \(answer.status) \(answer.body)") }
        return (answer.status, elapsed)
    }

    /// Waits until the serial output contains `text`.
    func waitForSerial(_ text: String, seconds: Double) throws(BenchError) {
        let start = monotonicNanoseconds()
        while !(readTextFile(serialPath) ?? "").contains(text) {
            guard Double(monotonicNanoseconds() - start) < seconds * 1e9 else {
                throw BenchError("no \"\(text.trimmingNewline)\" from the guest in \(Int(seconds)) s: "
                                 + "\(String((readTextFile(serialPath) ?? "").suffix(200)))")
            }
            usleep(2_000)
        }
    }

    /// Polls `path` every 100 µs until it is larger than `size`; returns the nanoseconds from `since`.
    func waitForGrowth(of path: String, beyond size: Int, since: UInt64, seconds: Double) throws(BenchError) -> UInt64 {
        while fileSize(path) <= size {
            guard Double(monotonicNanoseconds() - since) < seconds * 1e9 else {
                throw BenchError("the guest wrote nothing more in \(Int(seconds)) s: \(readTextFile(logPath) ?? "")")
            }
            usleep(100)
        }
        return monotonicNanoseconds() - since
    }

    /// Ends the process (SIGKILL if it is still running) and removes its socket.
    func stop() {
        child.reap()
        unlink(apiSocket)
    }
}

extension String {
    var trimmingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}

extension SnapshotBench {
    // The guest writes about 7 MiB/s on the emulating development host, so the stretches are kept small:
    // the first pass (DIRTY FILLED) is waited for in every run.

    /// Snapshot/restore set-ups: 128 MiB and 1 GiB, idle and with part of the RAM written.
    static func snapshotCases(quick: Bool) -> [SnapshotCase] {
        quick ? [SnapshotCase(memoryMiB: 128, dirtyMiB: 0), SnapshotCase(memoryMiB: 128, dirtyMiB: 8)]
            : [SnapshotCase(memoryMiB: 128, dirtyMiB: 0), SnapshotCase(memoryMiB: 128, dirtyMiB: 32),
               SnapshotCase(memoryMiB: 1024, dirtyMiB: 0), SnapshotCase(memoryMiB: 1024, dirtyMiB: 128)]
    }

    /// Migration set-ups: idle and a guest that keeps writing.
    static func migrationCases(quick: Bool) -> [SnapshotCase] {
        quick ? [SnapshotCase(memoryMiB: 128, dirtyMiB: 0), SnapshotCase(memoryMiB: 128, dirtyMiB: 8)]
            : [SnapshotCase(memoryMiB: 128, dirtyMiB: 0), SnapshotCase(memoryMiB: 128, dirtyMiB: 32),
               SnapshotCase(memoryMiB: 1024, dirtyMiB: 0), SnapshotCase(memoryMiB: 1024, dirtyMiB: 64)]
    }
}
