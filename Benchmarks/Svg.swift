// The plot: latency distributions per row (host view), one panel per measured latency section, on a
// log time axis (and row 6's times below them: SvgMetrics.swift). Each row: min–max as a thin line, p10–p90 as a bar, p50 as a tick, p99 as a dot, and
// the p50 ratio to the floor at the right. Plain SVG 1.1 text, no scripts, no external fonts.
import Glibc

enum SvgPlot {
    static let width = 980.0
    static let labelWidth = 330.0
    static let plotLeft = 340.0
    static let plotRight = 880.0
    static let rowHeight = 20.0

    static func render(_ report: BenchReport) -> String {
        let panels = report.sections.filter { section in
            section.kind == .latency && section.latency.contains { $0.main != nil }
        }
        var body = ""
        var y = 40.0
        body += text(x: 10, y: 22, "actor-vmm-bench: latency per exit (host view), round trip, request (\(report.startedAt))",
                     size: 15, weight: "bold")
        for section in panels {
            let drawn = panel(section, top: y)
            body += drawn.svg
            y = drawn.bottom + 16
        }
        body += legend(top: y)
        y += 40
        for section in report.sections where metricPanelSections.contains(section.id)
            && section.metrics.contains(where: { $0.unit == "ms" && !$0.values.isEmpty }) {
            let drawn = metricsPanel(section, top: y)
            body += drawn.svg
            y = drawn.bottom + 16
        }
        body += text(x: 10, y: y - 8, report.machine.oneLine, size: 10, color: "#555")
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(y))" viewBox="0 0 \(Int(width)) \(Int(y))" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
            <rect x="0" y="0" width="\(Int(width))" height="\(Int(y))" fill="white"/>
            \(body)</svg>

            """
    }

    /// One section: its title, a log axis in microseconds with grid lines, then a row per measured row.
    static func panel(_ section: Section, top: Double) -> (svg: String, bottom: Double) {
        let rows = section.latency.filter { $0.main != nil }
        let low = max(0.01, rows.compactMap { $0.main?.min }.min().map { $0 / 1000 } ?? 1)
        let high = max(low * 10, rows.compactMap { $0.main?.max }.max().map { $0 / 1000 } ?? 10)
        let scale = LogScale(low: low, high: high, left: plotLeft, right: plotRight)
        var out = text(x: 10, y: top + 14, section.title, size: 13, weight: "bold")
        let axisTop = top + 22
        let axisBottom = axisTop + Double(rows.count) * rowHeight + 6
        let decades = Int((log10(scale.high) - log10(scale.low)).rounded())
        for tick in scale.ticks() {
            let x = scale.x(tick)
            let major = abs(log10(tick) - log10(tick).rounded()) < 1e-9
            out += line(x1: x, y1: axisTop, x2: x, y2: axisBottom, color: major ? "#ccc" : "#eee", width: 1)
            if major || decades <= 3 {
                out += text(x: x, y: axisBottom + 12, label(tick), size: 10, anchor: "middle", color: "#555")
            }
        }
        for (index, row) in rows.enumerated() {
            guard let host = row.main else { continue }
            let mid = axisTop + Double(index) * rowHeight + rowHeight / 2 + 3
            let color = colour(for: row.id)
            out += text(x: labelWidth, y: mid + 4, row.label, size: 11, anchor: "end")
            out += line(x1: scale.x(host.min / 1000), y1: mid, x2: scale.x(host.max / 1000), y2: mid, color: color, width: 1)
            let left = scale.x(host.p10 / 1000), right = scale.x(host.p90 / 1000)
            out += "<rect x=\"\(n(left))\" y=\"\(n(mid - 5))\" width=\"\(n(max(1.5, right - left)))\" height=\"10\" fill=\"\(color)\" fill-opacity=\"0.55\"/>\n"
            let p50 = scale.x(host.p50 / 1000)
            out += line(x1: p50, y1: mid - 8, x2: p50, y2: mid + 8, color: "#000", width: 2)
            out += "<circle cx=\"\(n(scale.x(host.p99 / 1000)))\" cy=\"\(n(mid))\" r=\"3\" fill=\"#000\"/>\n"
            let ratioText = row.floorID == nil ? "floor" : times(row.ratioP50)
            out += text(x: plotRight + 12, y: mid + 4, ratioText, size: 11)
        }
        return (out, axisBottom + 14)
    }

    static func legend(top: Double) -> String {
        var out = line(x1: plotLeft, y1: top + 8, x2: plotLeft + 40, y2: top + 8, color: "#666", width: 1)
        out += text(x: plotLeft + 46, y: top + 12, "min–max", size: 10)
        out += "<rect x=\"\(n(plotLeft + 110))\" y=\"\(n(top + 3))\" width=\"30\" height=\"10\" fill=\"#666\" fill-opacity=\"0.55\"/>\n"
        out += text(x: plotLeft + 146, y: top + 12, "p10–p90", size: 10)
        out += line(x1: plotLeft + 210, y1: top, x2: plotLeft + 210, y2: top + 16, color: "#000", width: 2)
        out += text(x: plotLeft + 216, y: top + 12, "p50", size: 10)
        out += "<circle cx=\"\(n(plotLeft + 254))\" cy=\"\(n(top + 8))\" r=\"3\" fill=\"#000\"/>\n"
        out += text(x: plotLeft + 262, y: top + 12, "p99", size: 10)
        out += text(x: plotLeft + 300, y: top + 12, "right: p50 ratio to the row's floor", size: 10)
        return out
    }

    /// One colour per way of handling an exit, so the same strategy looks the same in every panel; floors grey.
    static func colour(for id: String) -> String {
        if id.hasPrefix("notify-") || id.hasPrefix("blk-") {
            if id.contains("kvm") { return "#b8b8b8" }
            if id.contains("eventfd") || id.hasPrefix("blk-p") { return "#7f7f7f" }
            if id.contains("loop") { return "#17becf" }
            return id.contains("same-core") ? "#ff7f0e" : "#2ca02c"
        }
        if id.hasSuffix("raw-again") { return "#b8b8b8" }
        if id.contains("raw") { return "#7f7f7f" }
        if id.contains("inline") { return "#2ca02c" }
        if id.contains("enqueue") { return id.contains("cross") ? "#d62728" : "#ff7f0e" }
        if id.contains("task") { return id.contains("cross") ? "#8c564b" : "#9467bd" }
        if id.contains("shared") { return "#1f77b4" }
        if id.contains("per-device") { return "#17becf" }
        return "#444"
    }

    /// An axis label: "0.5 µs", "20 µs", "1 ms", "50 ms".
    static func label(_ micros: Double) -> String {
        if micros >= 1000 { return fixed(micros / 1000, 0) + " ms" }
        return (micros >= 1 ? fixed(micros, 0) : fixed(micros, micros >= 0.1 ? 1 : 2)) + " µs"
    }

    static func n(_ value: Double) -> String { fixed(value, 1) }

    static func line(x1: Double, y1: Double, x2: Double, y2: Double, color: String, width: Double) -> String {
        "<line x1=\"\(n(x1))\" y1=\"\(n(y1))\" x2=\"\(n(x2))\" y2=\"\(n(y2))\" stroke=\"\(color)\" stroke-width=\"\(n(width))\"/>\n"
    }

    static func text(x: Double, y: Double, _ content: String, size: Int, anchor: String = "start",
                     weight: String = "normal", color: String = "#000") -> String {
        "<text x=\"\(n(x))\" y=\"\(n(y))\" font-size=\"\(size)\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" fill=\"\(color)\">\(escape(content))</text>\n"
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }
}

/// A base-10 logarithmic axis from `low` to `high` (both > 0) onto [left, right].
struct LogScale {
    let low: Double, high: Double, left: Double, right: Double

    init(low: Double, high: Double, left: Double, right: Double) {
        self.low = pow(10, floor(log10(low)))
        self.high = pow(10, ceil(log10(high)))
        self.left = left
        self.right = right
    }

    func x(_ value: Double) -> Double {
        let clamped = min(max(value, low), high)
        return left + (log10(clamped) - log10(low)) / (log10(high) - log10(low)) * (right - left)
    }

    /// 1, 2 and 5 times each power of ten within the axis.
    func ticks() -> [Double] {
        var ticks: [Double] = []
        var decade = low
        while decade <= high * 1.0001 {
            for factor in [1.0, 2, 5] where decade * factor <= high * 1.0001 { ticks.append(decade * factor) }
            decade *= 10
        }
        return ticks
    }
}
