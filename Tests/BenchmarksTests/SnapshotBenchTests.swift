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
