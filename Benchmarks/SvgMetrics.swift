// The plot's panel for row 6 (snapshot, restore, migration): each time row (unit ms) as min–max line and a
// median tick on a log axis, the median written at the right. Sizes and counts stay in the table.
import Glibc

extension SvgPlot {
    /// Sections drawn as metric panels: row 6 only (row 5's figures mix units and have their own table).
    static let metricPanelSections: Set<String> = ["snapshot"]

    static func metricsPanel(_ section: Section, top: Double) -> (svg: String, bottom: Double) {
        let rows = section.metrics.filter { $0.unit == "ms" && !$0.values.isEmpty }
        // Rows are in microseconds for the shared axis helpers (`label`, LogScale over µs).
        let low = max(0.01, (rows.compactMap(\.min).min() ?? 1) * 1000)
        let high = max(low * 10, (rows.compactMap(\.max).max() ?? 10) * 1000)
        let scale = LogScale(low: low, high: high, left: plotLeft, right: plotRight)
        var out = text(x: 10, y: top + 14, section.title, size: 13, weight: "bold")
        let axisTop = top + 22
        let axisBottom = axisTop + Double(rows.count) * rowHeight + 6
        for tick in scale.ticks() {
            let x = scale.x(tick)
            let major = abs(log10(tick) - log10(tick).rounded()) < 1e-9
            out += line(x1: x, y1: axisTop, x2: x, y2: axisBottom, color: major ? "#ccc" : "#eee", width: 1)
            if major { out += text(x: x, y: axisBottom + 12, label(tick), size: 10, anchor: "middle", color: "#555") }
        }
        var setUp = ""
        for (index, row) in rows.enumerated() {
            guard let median = row.median, let low = row.min, let high = row.max else { continue }
            let mid = axisTop + Double(index) * rowHeight + rowHeight / 2 + 3
            // Continuation rows ("  restore: ...") belong to the set-up the first row of their group names.
            if !row.label.hasPrefix(" "), let colon = row.label.firstIndex(of: ":") {
                setUp = String(row.label[..<colon]).replacing(", idle guest", with: " idle").replacing(", guest writing ", with: " writing ")
            }
            let label = setUp + ": " + shortName(row.id)
            let color = row.id.contains("migration") ? "#1f77b4" : row.id.hasSuffix("restore") ? "#2ca02c" : "#ff7f0e"
            out += text(x: labelWidth, y: mid + 4, label, size: 11, anchor: "end")
            out += line(x1: scale.x(low * 1000), y1: mid, x2: scale.x(high * 1000), y2: mid, color: color, width: 3)
            let x = scale.x(median * 1000)
            out += line(x1: x, y1: mid - 8, x2: x, y2: mid + 8, color: "#000", width: 2)
            out += text(x: plotRight + 12, y: mid + 4, fixed(median, median < 10 ? 2 : 0) + " ms", size: 11)
        }
        out += text(x: plotLeft, y: axisBottom + 26, "line: min–max over the runs; tick: median (written at the right)", size: 10)
        return (out, axisBottom + 32)
    }

    /// The figure a row 6 id names, short enough for the plot's label column.
    static func shortName(_ id: String) -> String {
        let names = [("-migration-request", "migration request"), ("-migration-total", "migration total"),
                     ("-migration-downtime", "migration downtime"), ("-migration-running", "running again"),
                     ("-pause", "pause"), ("-snapshot", "snapshot"), ("-restore", "restore")]
        return names.first { id.hasSuffix($0.0) }?.1 ?? id
    }
}
