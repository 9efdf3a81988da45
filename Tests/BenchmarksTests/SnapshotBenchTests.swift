@testable import ActorVmm
@testable import Benchmarks
import Testing

/// Row 6 reads the migration's figures from the line the source logs (`MigrationReport.description`): the
/// two must agree.
@Suite struct SnapshotBenchTests {
    @Test func theMigrationLogLineParsesBackToTheReport() throws {
        var report = MigrationReport()
        report.pagesPerRound = [29, 4, 1]
        report.bytesSent = 139_264
        report.downtimeNanoseconds = 16_042_999
        report.totalNanoseconds = 78_310_000
        #expect(report.description == "3 rounds (pages 29/4/1), 139264 bytes sent, downtime 16.042 ms, total 78.310 ms")
        let line = try #require(MigrationLogLine("[  1.234567] actor-vmm info: VM migrated to unix:/tmp/m.sock: \(report)"))
        #expect(line.pagesPerRound == [29, 4, 1])
        #expect(line.bytesSent == 139_264)
        #expect(line.downtimeMs == 16.042)
        #expect(line.totalMs == 78.31)
        #expect(MigrationLogLine("VM migrated to unix:/x: something else") == nil)
    }

    @Test func snapshotRunsOption() throws {
        #expect(try BenchOptions.parse([], cpuCount: 2).snapshotRuns == 3)
        #expect(try BenchOptions.parse(["--quick"], cpuCount: 2).snapshotRuns == 1)
        #expect(try BenchOptions.parse(["--snapshot-runs", "5", "--only", "snapshot"], cpuCount: 2).sections == ["snapshot"])
        #expect(throws: BenchError.self) { try BenchOptions.parse(["--snapshot-runs", "0"], cpuCount: 2) }
    }
}

@Suite struct SnapshotRowsTests {
    @Test func rowsPerSetUpAndFigure() {
        let idle = SnapshotCase(memoryMiB: 128, dirtyMiB: 0), writing = SnapshotCase(memoryMiB: 1024, dirtyMiB: 64)
        let sample = SnapshotSample(pauseMs: 1, snapshotMs: 5, stateBytes: 8192, memoryBytes: 134_217_728,
                                    memoryAllocatedBytes: 1_048_576, restoreMs: 15)
        var results = SnapshotResults()
        results.snapshots = [(idle, .success([sample, sample]))]
        results.migrations = [(writing, .failure(BenchError("the destination never listened")))]
        let rows = Sections.snapshotRows(.success(results))
        #expect(rows.count == 12)
        #expect(rows[0].id == "128m-idle-pause" && rows[0].label == "128 MiB, idle guest: pause (vm.pause)")
        #expect(rows.first { $0.id == "128m-idle-state" }?.median == 8)
        #expect(rows.first { $0.id == "128m-idle-memory-size" }?.median == 128)
        #expect(rows[6].id == "1024m-dirty64m-migration-request" && rows[6].label.hasPrefix("1 GiB, guest writing 64 MiB: "))
        #expect(rows[6].unavailable == "failed: the destination never listened")
        #expect(rows[7...].allSatisfy { $0.unavailable == "-" && $0.values.isEmpty })
        let skipped = Sections.snapshotRows(.failure(BenchError("not run (--only)")))
        #expect(skipped.count == 1 && skipped[0].unavailable == "not run (--only)")
    }

    @Test func thePlotHasAPanelForTheTimes() {
        let sample = MigrationSample(requestMs: 50, totalMs: 40, downtimeMs: 4, rounds: 2, bytesSent: 131_072,
                                     pagesPerRound: [29, 1], runningAgainMs: 1)
        var results = SnapshotResults()
        results.migrations = [(SnapshotCase(memoryMiB: 1024, dirtyMiB: 64), .success([sample]))]
        var section = Sections.snapshot(BenchOptions())
        section.metrics = Sections.snapshotRows(.success(results))
        var report = BenchReport(machine: MachineInfo(cpuModel: "X", cpuCount: 2, kernel: "K", kvmModules: [], hypervisorFlag: true),
                                 options: BenchOptions(), tscHertz: 1e9, startedAt: "T")
        report.sections = [section]
        let svg = SvgPlot.render(report)
        #expect(svg.contains(">1 GiB writing 64 MiB: migration downtime</text>"), "\(svg)")
        #expect(svg.contains(">4.00 ms</text>") && svg.contains(">40 ms</text>"))
        #expect(!svg.contains("rounds"), "only times are plotted")
    }
}
