import Foundation
import Testing

/// Linux in the nested KVM tier across a snapshot restored in a new process and across a live migration
/// (docs/snapshot.md, docs/nested.md; Tests/Nested/snapshot-flow.sh runs them in L1). The guest appends
/// numbered records to a file on its ext4 root, fsyncs each and only then prints "ACK n" on its console;
/// here the host checks that it went on from where it was (every ACK exactly once, one boot, ACKs printed
/// by the second VMM), that its file system checks clean, and that no acknowledged record is missing.
extension NestedKvmTests {
    /// Paused after some ACKs, snapshotted, its VMM shut down; `actor-vmm --restore …,resume=on` in a new
    /// process runs it on to its last record and power-off.
    @Test func linuxContinuesAfterRestoreInANewProcess() async throws {
        let check = try await NestedHarness.check("linux-snapshot")
        try Self.expectGuestContinued(check, steps: [
            "source-socket", "acks-before", "pause", "paused", "snapshot", "snapshot-files", "source-shutdown-vmm",
            "source-exit-0", "no-output-after-pause", "restored-exit-0", "acks-after", "all-acks",
        ], exactlyNext: true)
        check.report("Linux snapshot → restore in a new process (the restore)", marker: "FLOW MARK")
    }

    /// Migrated live over unix: from one VMM process to another while it writes; the destination runs it
    /// on to its last record and power-off.
    @Test func linuxContinuesAfterLiveMigration() async throws {
        let check = try await NestedHarness.check("linux-migration")
        try Self.expectGuestContinued(check, steps: [
            "source-socket", "acks-before", "destination-socket", "destination-listens", "send-migration",
            "receive-migration", "source-shut-down", "source-shutdown-vmm", "source-exit-0", "destination-exits",
            "destination-exit-0", "acks-after", "all-acks",
        ], exactlyNext: false)
        check.report("Linux live migration over unix: (the switch)", marker: "FLOW MARK")
    }

    /// The flow's steps, the console (ACKs 1…N exactly once across both VMMs, one kernel boot, ACKs after
    /// the switch; with `exactlyNext` the first of them is the one after the last before it), and the image:
    /// `e2fsck -fn` clean, every record up to the last ACK in /avm-log.txt, in order.
    static func expectGuestContinued(_ check: NestedHarness.Check, steps: [String], exactlyNext: Bool,
                                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(check.status == "0", "\(check.context)", sourceLocation: sourceLocation)
        for step in steps {
            #expect(check.first(containing: "FLOW STEP \(step) ok") != nil, "step \(step): \(check.context)",
                    sourceLocation: sourceLocation)
        }
        let bytes = try #require(FileManager.default.contents(atPath: check.dir + "/console.txt"),
                                 "the console file: \(check.context)", sourceLocation: sourceLocation)
        let console = String(decoding: bytes, as: UTF8.self)
        let mark = try #require(check.first(containing: "FLOW MARK ")?.text, "\(check.context)", sourceLocation: sourceLocation)
        let fields = Self.fields(mark)
        let offset = try #require(fields["offset"].flatMap { Int($0) }, "\(mark)", sourceLocation: sourceLocation)
        let frozen = try #require(fields["last-ack"].flatMap { Int($0) }, "\(mark)", sourceLocation: sourceLocation)
        let start = try #require(console.split(whereSeparator: \.isNewline).first { $0.hasPrefix("ACTORVMM-ACK-START ") },
                                 "the workload started: \(console.suffix(3000))", sourceLocation: sourceLocation)
        let records = try #require(Self.fields(String(start))["records"].flatMap { Int($0) }, "\(start)",
                                   sourceLocation: sourceLocation)
        let acks = Self.acks(console)
        #expect(acks == Array(1...records), "every ACK exactly once, in order: \(acks)\n\(console.suffix(3000))",
                sourceLocation: sourceLocation)
        #expect(console.components(separatedBy: "Run /sbin/init as init process").count == 2
                    && console.components(separatedBy: "ACTORVMM-ACK-START").count == 2,
                "one boot: the guest did not start over\n\(console.suffix(3000))", sourceLocation: sourceLocation)
        #expect(console.contains("ACTORVMM-ACK-DONE n=\(records)"), "\(console.suffix(3000))", sourceLocation: sourceLocation)
        // What the second VMM printed: ACKs after the one the first VMM showed last.
        let after = bytes.count >= offset ? Self.acks(String(decoding: bytes.dropFirst(offset), as: UTF8.self)) : []
        #expect(!after.isEmpty && after.allSatisfy { $0 > frozen }, "ACKs after the switch (last before: \(frozen)): \(after)",
                sourceLocation: sourceLocation)
        if exactlyNext {
            #expect(after.first == frozen + 1, "the restored guest goes on with ACK \(frozen + 1): \(after)",
                    sourceLocation: sourceLocation)
        }
        // The host's side: the file system in partition 1 of the image, and the records in it.
        let image = check.dir + "/disk.raw?offset=1048576"
        let fsck = Harness.run("/usr/bin/env", ["e2fsck", "-fn", image])
        #expect(fsck.status == 0, "e2fsck -fn: \(fsck.stdout) \(fsck.stderr)", sourceLocation: sourceLocation)
        let read = Harness.run("/usr/bin/env", ["debugfs", "-R", "cat /avm-log.txt", image])
        let lines = read.stdout.split(separator: "\n").map(String.init)
        let lastAck = acks.last ?? 0
        #expect(read.status == 0 && lines.count >= lastAck
                    && Array(lines.prefix(lastAck)) == (0..<lastAck).map { "record \($0 + 1)" },
                "records 1…\(lastAck) in /avm-log.txt: \(lines.count) lines, last \(lines.last ?? "none") \(read.stderr)",
                sourceLocation: sourceLocation)
    }

    /// The numbers of the console's "ACK n" lines, in order.
    static func acks(_ text: String) -> [Int] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            line.hasPrefix("ACK ") ? line.dropFirst(4).split(separator: " ").first.flatMap { Int($0) } : nil
        }
    }

    /// "key=value" words of a line.
    static func fields(_ line: String) -> [String: String] {
        var fields: [String: String] = [:]
        for word in line.split(separator: " ") {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }
}
