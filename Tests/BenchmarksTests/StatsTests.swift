@testable import Benchmarks
import Testing

@Suite struct StatsTests {
    @Test func nearestRankPercentiles() {
        let sorted = (1...100).map(Double.init)
        #expect(percentile(sorted, 50) == 50)
        #expect(percentile(sorted, 90) == 90)
        #expect(percentile(sorted, 99) == 99)
        #expect(percentile(sorted, 100) == 100)
        #expect(percentile(sorted, 0) == 1)
        #expect(percentile([7], 99) == 7)
        // Nearest rank never interpolates: p50 of 1...4 is the 2nd value.
        #expect(percentile([1, 2, 3, 4], 50) == 2)
        #expect(percentile([1, 2, 3, 4], 51) == 3)
    }

    @Test func summaryOfUnsortedSamples() throws {
        let summary = try #require(Summary([5, 1, 4, 2, 3, 10, 9, 8, 7, 6]))
        #expect(summary.count == 10)
        #expect(summary.min == 1 && summary.max == 10)
        #expect(summary.p10 == 1 && summary.p50 == 5 && summary.p90 == 9 && summary.p99 == 10)
        #expect(summary.mean == 5.5)
        #expect(Summary([]) == nil)
    }

    @Test func ratiosAndMedians() {
        #expect(ratio(11, to: 10) == 1.1)
        #expect(ratio(1, to: 0) == nil)
        #expect(medianValue([3, 1, 2]) == 2)
        #expect(medianValue([4, 1, 2, 3]) == 2.5)
        #expect(medianValue([]) == nil)
    }

    @Test func fixedPointText() {
        #expect(fixed(1.2345, 2) == "1.23")
        #expect(fixed(1.235, 2) == "1.24")
        #expect(fixed(-0.5, 0) == "-1")
        #expect(fixed(-0.001, 2) == "0.00")
        #expect(fixed(12, 3) == "12.000")
        #expect(fixed(0.05, 2) == "0.05")
        #expect(fixed(.nan, 2) == "nan")
        #expect(micros(40) == "0.04")
        #expect(micros(9_870) == "9.87")
        #expect(micros(45_240) == "45.2")
        #expect(micros(1_234_400) == "1234")
        #expect(times(1.0432) == "1.04x")
        #expect(times(137.2) == "137x")
        #expect(times(nil) == "-")
    }
}

@Suite struct ReportTests {
    func row(_ id: String, floor: String?, p50: Double, p99: Double) -> LatencyRow {
        var row = LatencyRow(id: id, label: id, floorID: floor)
        row.main = Summary(count: 10, min: p50 / 2, p10: p50 * 0.9, p50: p50, p90: p99 * 0.9, p99: p99, max: p99 * 2, mean: p50)
        return row
    }

    func report() -> BenchReport {
        var report = BenchReport(machine: MachineInfo(cpuModel: "Test CPU", cpuCount: 2, kernel: "Linux 6 x86_64",
                                                      kvmModules: ["kvm"], hypervisorFlag: false),
                                 options: BenchOptions(), tscHertz: 2.5e9, startedAt: "2025-01-01T00:00:00Z")
        report.sections = [Section(id: "exit", title: "1. Exit <test> & more", method: "m", kind: .latency,
                                   latency: [row("pio-raw", floor: nil, p50: 10_000, p99: 20_000),
                                             row("pio-inline-cross-core", floor: "pio-raw", p50: 10_500, p99: 26_000),
                                             LatencyRow(id: "blk", label: "virtio-blk", floorID: "pio-raw", unavailable: "n/a (x)")])]
        report.compareWithFloors()
        report.targets = Sections.targets(report)
        return report
    }

    @Test func rowsAreComparedWithTheirFloors() throws {
        let report = report()
        let inline = try #require(report.row("pio-inline-cross-core"))
        #expect(inline.ratioP50 == 1.05)
        #expect(inline.ratioP99 == 1.3)
        #expect(report.row("pio-raw")?.ratioP50 == nil)
        let p50 = try #require(report.targets.first { $0.name == "PIO inline-if-idle / raw, p50" })
        #expect(p50.met == true && p50.verdict == "met")
        #expect(report.targets.first { $0.name.hasPrefix("MMIO") }?.verdict == "n/a")
    }

    @Test func textTableShowsRatiosAndUnavailableRows() {
        let text = TextTable.render(report())
        #expect(text.contains("1.05x"))
        #expect(text.contains("n/a (x)"))
        #expect(text.contains("PIO inline-if-idle / raw, p50"))
    }

    @Test func alignPadsColumns() {
        let text = TextTable.align([["a", "1", "22"], ["bbb", "333", "4"], ["note row", "n/a"]])
        #expect(text == "   a           1  22\n   bbb       333   4\n   note row  n/a\n")
    }

    @Test func summaryLineLeadsWithTheHandoffRatio() {
        let line = Sections.summary(report(), files: "results/x.{json,svg,txt}")
        #expect(line.hasPrefix("summary: exit hand-off inline-if-idle vs raw inline: PIO p50 1.05x p99 1.30x"))
        #expect(line.hasSuffix("results/x.{json,svg,txt}"))
        #expect(!line.contains("\n"))
    }

    @Test func svgIsWellFormedAndEscaped() {
        let svg = SvgPlot.render(report())
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        #expect(svg.hasSuffix("</svg>\n"))
        #expect(svg.contains("1. Exit &lt;test&gt; &amp; more"))
        #expect(!svg.contains("<test>"))
        #expect(svg.components("<circle").count - 1 == 2 + 1)  // a p99 dot per measured row, one in the legend
        #expect(svg.components("<svg").count - 1 == 1)
    }

    @Test func logScaleMapsDecades() {
        let scale = LogScale(low: 3, high: 300, left: 0, right: 300)
        #expect(scale.low == 1 && scale.high == 1000)
        #expect(scale.x(1) == 0 && scale.x(1000) == 300)
        #expect(abs(scale.x(10) - 100) < 1e-9)
        #expect(scale.x(0.001) == 0)
        #expect(scale.ticks() == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000])
    }
}

extension String {
    /// The pieces of `self` around `separator` (a tiny stand-in for Foundation's `components`).
    func components(_ separator: String) -> [Substring] { split(separator: separator, omittingEmptySubsequences: false) }
}

@Suite struct RoundsTests {
    @Test func percentilesAreMediansOverRoundsAndExtremesArePooled() throws {
        let calm = (1...100).map(Double.init)
        let burst = (1...100).map { Double($0) * 10 }  // one round hit by background load
        let summary = try #require(Summary(rounds: [calm, calm, burst]))
        #expect(summary.p50 == 50 && summary.p99 == 99)
        #expect(summary.count == 300 && summary.min == 1 && summary.max == 1000)
        #expect(Summary(rounds: [[], []]) == nil)
        #expect(Summary(rounds: [[], [3]])?.p50 == 3)
    }
}
