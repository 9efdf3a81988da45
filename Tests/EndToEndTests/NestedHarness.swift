import Foundation
import Glibc

/// The nested KVM tier (docs/nested.md): one L1 machine under QEMU (pure emulation, one CPU), whose
/// `kvm_amd` runs on QEMU's emulated SVM, runs Tests/Nested/checks.sh with the binaries this `swift test`
/// built; each check leaves its record in the output share, and each test in NestedKvmTests asserts on
/// its own. The batch runs once per test process, on first use.
enum NestedHarness {
    /// Set by L1's init (Tests/Nested/l1-setup.sh): this process runs inside L1.
    static let insideL1 = ProcessInfo.processInfo.environment["ACTOR_VMM_NESTED_L1"] == "1"
    /// `ACTOR_VMM_NESTED=0` skips the tier; `ACTOR_VMM_NESTED_SUITES=0` leaves the project's own KVM suites
    /// out of the batch.
    static let environment = ProcessInfo.processInfo.environment

    /// Why the tier cannot run here, or nil.
    static let skipReason: String? = {
        if insideL1 { return "this is the nested tier's L1 (no nesting twice)" }
        if environment["ACTOR_VMM_NESTED"] == "0" { return "ACTOR_VMM_NESTED=0: the nested KVM tier is skipped" }
        let qemu = access("/usr/bin/qemu-system-x86_64", X_OK) == 0
        if !qemu && getuid() != 0 { return "needs qemu-system-x86_64 (apt-get install qemu-system-x86), or root to install it" }
        if !qemu && access("/usr/bin/apt-get", X_OK) != 0 { return "needs qemu-system-x86_64 and there is no apt-get to install it" }
        if getuid() != 0 { return "needs root (TAP devices and the installs in Tests/Nested/l1-setup.sh)" }
        return nil
    }()

    /// The batch's outcome: the output share (OUT), run-l1.sh's exit status and error output.
    struct Batch {
        let out: String
        let status: Int32
        let stderr: String
        var l1Ready: String { Self.read(out + "/l1-ready-seconds") ?? "?" }
        var l1Seconds: String { Self.read(out + "/l1-seconds") ?? "?" }
        static func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// Prepares the inputs on the host (nothing is compiled in L1), boots L1 once and runs every check.
    /// `ACTOR_VMM_NESTED_OUT=DIR` reads the records an earlier run left in DIR instead (no L1 boot: for
    /// working on the host's assertions).
    static let batch: Result<Batch, LinuxHarness.RecipeError> = {
        if let earlier = environment["ACTOR_VMM_NESTED_OUT"] {
            print("nested tier: the records of an earlier run in \(earlier) (ACTOR_VMM_NESTED_OUT)")
            return .success(Batch(out: earlier, status: 0, stderr: ""))
        }
        let nested = Harness.packageRoot + "/Tests/Nested/"
        let setup = Harness.run("/bin/bash", [nested + "l1-setup.sh"], timeout: 1200)
        guard setup.status == 0 else {
            return .failure(.init(message: "Tests/Nested/l1-setup.sh failed (exit \(setup.status)): \(setup.stderr.suffix(3000))"))
        }
        let disk = Harness.run("/bin/bash", [nested + "disk-image.sh"], timeout: 300)
        guard disk.status == 0 else {
            return .failure(.init(message: "Tests/Nested/disk-image.sh failed: \(disk.stderr.suffix(3000))"))
        }
        let debian: String, microvm: String, hotplug: String
        do {
            debian = try LinuxHarness.recipe("debian-guest.sh")
            microvm = try LinuxHarness.recipe("microvm-kernel.sh", [nested + "microvm-disk.config"])
            hotplug = try LinuxHarness.recipe("hotplug-guest.sh")  // the hotplug check's guest (hotplug-flow.sh)
        } catch let error as LinuxHarness.RecipeError {
            return .failure(error)
        } catch {
            return .failure(.init(message: "\(error)"))
        }
        let out = "/tmp/actor-vmm-nested-\(getpid())"
        removeStaleOutputs()
        try? FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var env = [
            "VMM": Harness.vmmPath, "REMOTE": Harness.remotePath, "GUEST": Harness.guestPath, "DEBIAN": debian,
            "MICROVM": microvm, "DISK": disk.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
            "ROOT": Harness.packageRoot, "HOTPLUG": hotplug,
        ]
        // L1's init starts the batch with an empty environment: OUT/env is how NESTED_ONLY reaches checks.sh.
        if let only = environment["NESTED_ONLY"] { env["NESTED_ONLY"] = only }
        if environment["ACTOR_VMM_NESTED_SUITES"] != "0" {
            env["XCTEST"] = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        }
        // checks.sh sources the file: each value single-quoted (NESTED_ONLY may hold `|`, `(`…).
        let text = env.sorted { $0.key < $1.key }
            .map { "\($0.key)='\($0.value.replacingOccurrences(of: "'", with: "'\\''"))'\n" }.joined()
        _ = FileManager.default.createFile(atPath: out + "/env", contents: Data(text.utf8))
        let run = LinuxHarness.oneAtATime {
            Harness.run("/bin/bash", [nested + "run-l1.sh", nested + "checks.sh", out], timeout: 1800)
        }
        let batch = Batch(out: out, status: run.status, stderr: run.stderr)
        print("nested tier: L1 ready after \(batch.l1Ready) s, whole L1 run \(batch.l1Seconds) s (records in \(out))")
        return .success(batch)
    }()

    /// Output folders of earlier test processes that are gone.
    static func removeStaleOutputs() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        for name in names where name.hasPrefix("actor-vmm-nested-") {
            guard let pid = Int32(name.dropFirst("actor-vmm-nested-".count)), pid != getpid(),
                  kill(pid, 0) != 0 else { continue }
            try? FileManager.default.removeItem(atPath: "/tmp/" + name)
        }
    }

    /// One check's record (Tests/Nested/stamp.py): its stamped output, exit status and run time.
    struct Check {
        let name: String
        let dir: String
        let status: String
        let seconds: Double
        let lines: [LinuxHarness.Line]

        func first(containing text: String) -> LinuxHarness.Line? { lines.first { $0.text.contains(text) } }
        var transcript: String { lines.map { String(format: "[%7.2f] ", $0.time) + $0.text }.joined(separator: "\n") }
        var context: String { "\(name): status \(status) after \(seconds) s\n\(transcript.suffix(6000))" }

        /// Prints the time to `marker` for the test output.
        func report(_ what: String, marker: String) {
            let at = first(containing: marker).map { String(format: "%.1f s", $0.time) } ?? "never"
            print("nested tier: \(what): '\(marker)' after \(at) (whole run \(String(format: "%.1f", seconds)) s)")
        }
    }

    /// The record of check `name`, once the batch has run; throws when the batch or the check did not run.
    static func check(_ name: String) async throws -> Check {
        let batch = try await Harness.offPool { try NestedHarness.batch.get() }  // minutes, once: off the pool
        let prefix = batch.out + "/checks/" + name
        guard let status = Batch.read(prefix + ".status") else {
            throw LinuxHarness.RecipeError(message: """
                check \(name) did not run\(environment["NESTED_ONLY"].map { " (NESTED_ONLY=\($0))" } ?? "") \
                (run-l1.sh exit \(batch.status)): \(batch.stderr.suffix(2000))
                L1 console: \(Batch.read(batch.out + "/l1-console.log")?.suffix(3000) ?? "none")
                """)
        }
        let log = Batch.read(prefix + ".log") ?? ""
        let lines = log.split(separator: "\n", omittingEmptySubsequences: false).compactMap { line -> LinuxHarness.Line? in
            // "[   1.234] text" (stamp.py)
            guard line.hasPrefix("["), let close = line.firstIndex(of: "]"),
                  let time = Double(line[line.index(after: line.startIndex)..<close].trimmingCharacters(in: .whitespaces))
            else { return nil }
            let text = line[line.index(after: close)...].dropFirst()
            return LinuxHarness.Line(time: time, text: String(text).replacingOccurrences(of: "\u{1B}[", with: "^["))
        }
        return Check(name: name, dir: prefix, status: status, seconds: Double(Batch.read(prefix + ".seconds") ?? "") ?? 0,
                     lines: lines)
    }
}
