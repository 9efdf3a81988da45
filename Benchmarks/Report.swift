// The results of one run, independent of how they are shown: sections of rows, each row compared with
// its floor, and the issue's targets. Rendered as a text table here, as JSON and SVG elsewhere.

/// One row of a latency section (exit, notify, virtio-blk, placement). Times in nanoseconds.
struct LatencyRow: Sendable {
    var id: String
    var label: String
    /// The row this one is compared with; nil for a floor.
    var floorID: String?
    /// Why there are no numbers ("n/a (...)" or the error), or nil.
    var unavailable: String?
    /// The row's main distribution, which the ratios compare: rows 1 and 4, per exit, host view (KVM_RUN
    /// return to the next KVM_RUN return); row 2, per round trip; row 3, per request. Its JSON key is `mainKey`.
    var main: Summary?
    var mainKey = "host"
    /// The serving side's own time: rows 1 and 4, the VMM's per exit (KVM_RUN return to handled); row 2, the
    /// responder's (device loop or floor thread) from wake-up to its reply.
    var handler: Summary?
    var handlerKey = "vmm"
    /// Per access, guest view (rdtsc around it).
    var guest: Summary?
    /// Further distributions for the JSON (e.g. "host_writes", "guest_reads").
    var details: [(String, Summary)] = []
    /// The host p50 of each round, to show drift across the run.
    var roundP50s: [Double] = []
    /// Events per second (rows 1 and 4: exits/s summed over vCPUs; row 3: requests/s of busy time).
    var rate: Double?
    var rateKey = "exits_per_second"
    /// Share of exits handed to a busy device loop instead of running inline (placement rows).
    var slowPathShare: Double?
    /// Free-form facts for the JSON (placement, strategy, ...).
    var attributes: [(String, String)] = []

    // Filled in by `BenchReport.compareWithFloors()`.
    var ratioP50: Double?
    var ratioP99: Double?
    var guestRatioP50: Double?
    var guestRatioP99: Double?

    init(id: String, label: String, floorID: String?, unavailable: String? = nil) {
        self.id = id; self.label = label; self.floorID = floorID; self.unavailable = unavailable
    }
}

/// One row of the start/memory section: a measurement repeated over several processes.
struct MetricRow: Sendable {
    var id: String
    var label: String
    var unit: String
    var values: [Double] = []
    var unavailable: String?
    /// Upper bound from the issue, if there is one.
    var target: Double?
    /// The row this one is compared with (its median to the floor's median); nil for none.
    var floorID: String?

    var median: Double? { medianValue(values) }
    var min: Double? { values.min() }
    var max: Double? { values.max() }
    var met: Bool? { target.flatMap { limit in median.map { $0 <= limit } } }
}

enum SectionKind: Sendable { case latency, metrics }

struct Section: Sendable {
    var id: String
    var title: String
    /// What exactly is measured, in a sentence.
    var method: String
    var kind: SectionKind
    /// Column headers of the handler and rate columns in the text table.
    var handlerHeader = "vmm p50"
    var rateHeader = "exits/s"
    var latency: [LatencyRow] = []
    var metrics: [MetricRow] = []
}

/// One of the issue's targets and whether this run meets it.
struct TargetCheck: Sendable {
    var name: String
    var measured: Double?
    var limit: Double
    var unit: String
    var note: String?
    var met: Bool? { measured.map { $0 <= limit } }

    var verdict: String {
        guard let met else { return "n/a" }
        return met ? "met" : "MISSED"
    }
}

struct BenchReport: Sendable {
    var machine: MachineInfo
    var options: BenchOptions
    var tscHertz: Double
    var startedAt: String
    var durationSeconds: Double = 0
    var sections: [Section] = []
    var targets: [TargetCheck] = []
    var summary = ""

    func row(_ id: String) -> LatencyRow? {
        for section in sections { if let row = section.latency.first(where: { $0.id == id }) { return row } }
        return nil
    }

    func metric(_ id: String) -> MetricRow? {
        for section in sections { if let row = section.metrics.first(where: { $0.id == id }) { return row } }
        return nil
    }

    /// Fills in every row's ratios to its floor (same section).
    mutating func compareWithFloors() {
        for s in sections.indices {
            let rows = sections[s].latency
            for r in rows.indices {
                guard let floorID = rows[r].floorID, let floor = rows.first(where: { $0.id == floorID }) else { continue }
                if let main = rows[r].main, let base = floor.main {
                    sections[s].latency[r].ratioP50 = ratio(main.p50, to: base.p50)
                    sections[s].latency[r].ratioP99 = ratio(main.p99, to: base.p99)
                }
                if let guest = rows[r].guest, let base = floor.guest {
                    sections[s].latency[r].guestRatioP50 = ratio(guest.p50, to: base.p50)
                    sections[s].latency[r].guestRatioP99 = ratio(guest.p99, to: base.p99)
                }
            }
        }
    }
}

// MARK: - The text table

enum TextTable {
    /// Renders the whole report as text (what stdout shows, and the .txt file holds).
    static func render(_ report: BenchReport) -> String {
        var out = "actor-vmm-bench (\(report.options.quick ? "quick" : "full") run, \(report.startedAt))\n"
        out += "host: \(report.machine.oneLine)\n"
        out += "pinning: \(pinningText(report.options)); TSC \(fixed(report.tscHertz / 1e6, 1)) MHz\n"
        out += "times in microseconds; x p50/x p99 = this row's percentile / its floor's; vmm, loop = the serving "
            + "side's own time (ns)\n"
        for section in report.sections {
            out += "\n== \(section.title)\n   \(section.method)\n"
            out += section.kind == .latency ? latencyTable(section) : metricsTable(section)
        }
        out += "\n== Targets\n"
        out += align([["target", "measured", "limit", "verdict"]] + report.targets.map { target in
            [target.name, target.measured.map { fixed($0, 2) + target.unit } ?? "n/a",
             "<= " + fixed(target.limit, 2) + target.unit, target.verdict + (target.note.map { " (\($0))" } ?? "")]
        })
        return out
    }

    static func pinningText(_ options: BenchOptions) -> String {
        guard let vcpu = options.pinVcpu else { return "none (--no-pin)" }
        let loop = options.crossCore ? options.pinLoop.map { ", cross-core device loop on CPU \($0)" } ?? "" : ""
        return "vCPU thread on CPU \(vcpu), same-core device loop on CPU \(vcpu)\(loop)"
    }

    static func latencyTable(_ section: Section) -> String {
        let hasGuest = section.latency.contains { $0.guest != nil }
        let hasGuestRatio = section.latency.contains { $0.guestRatioP50 != nil }
        let hasHandler = section.latency.contains { $0.handler != nil }
        let hasRate = section.latency.contains { $0.rate != nil }
        let hasSlowPath = section.latency.contains { $0.slowPathShare != nil }
        var header = ["row", "n", "p50", "p90", "p99", "max", "x p50", "x p99"]
        if hasHandler { header.append(section.handlerHeader) }
        if hasGuest { header += ["guest p50", "guest p99"] }
        if hasGuestRatio { header.append("g x p50") }
        if hasRate { header.append(section.rateHeader) }
        if hasSlowPath { header.append("via loop") }
        var lines = [header]
        for row in section.latency {
            guard let main = row.main else {
                lines.append([row.label, row.unavailable ?? "n/a"])
                continue
            }
            var line = [row.label, String(main.count), micros(main.p50), micros(main.p90), micros(main.p99),
                        micros(main.max), row.floorID == nil ? "1.00x" : times(row.ratioP50),
                        row.floorID == nil ? "1.00x" : times(row.ratioP99)]
            if hasHandler { line.append(row.handler.map { fixed($0.p50, 0) } ?? "-") }
            if hasGuest { line += [row.guest.map { micros($0.p50) } ?? "-", row.guest.map { micros($0.p99) } ?? "-"] }
            if hasGuestRatio {
                line.append(row.floorID == nil ? (row.guest == nil ? "-" : "1.00x") : times(row.guestRatioP50))
            }
            if hasRate { line.append(row.rate.map { fixed($0, 0) } ?? "-") }
            if hasSlowPath { line.append(row.slowPathShare.map { fixed($0 * 100, 2) + "%" } ?? "-") }
            lines.append(line)
        }
        return align(lines)
    }

    static func metricsTable(_ section: Section) -> String {
        var lines = [["row", "median", "min", "max", "n", "x floor", "target"]]
        for row in section.metrics {
            guard let median = row.median, let low = row.min, let high = row.max else {
                lines.append([row.label, row.unavailable ?? "n/a"])
                continue
            }
            let floor = row.floorID.flatMap { id in section.metrics.first { $0.id == id }?.median }
            let target = row.target.map { "<= \(fixed($0, 1)) \(row.unit): " + (row.met == true ? "met" : "MISSED") } ?? ""
            lines.append([row.label, fixed(median, 2) + " " + row.unit, fixed(low, 2), fixed(high, 2),
                          String(row.values.count), floor.map { times(ratio(median, to: $0)) } ?? "", target])
        }
        return align(lines)
    }

    /// Left-aligns the first column and right-aligns the others. A row with two cells (a label and a
    /// note, e.g. "n/a (...)") lets the note run across the remaining columns.
    static func align(_ rows: [[String]]) -> String {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows where row.count == columns || row.count > 2 {
            for (index, cell) in row.enumerated() { widths[index] = Swift.max(widths[index], cell.count) }
        }
        for row in rows where row.count <= 2 { widths[0] = Swift.max(widths[0], row[0].count) }
        var out = ""
        for row in rows {
            var line = "   "
            for (index, cell) in row.enumerated() {
                let pad = String(repeating: " ", count: Swift.max(0, widths[index] - cell.count))
                if index == 0 { line += cell + pad } else if row.count <= 2 { line += "  " + cell } else { line += "  " + pad + cell }
            }
            while line.last == " " { line.removeLast() }
            out += line + "\n"
        }
        return out
    }
}
