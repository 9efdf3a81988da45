// Statistics over latency samples: percentiles (nearest rank), summaries and ratios to a floor.

/// A latency distribution, in nanoseconds.
struct Summary: Equatable, Sendable {
    var count: Int
    var min: Double
    var p10: Double
    var p50: Double
    var p90: Double
    var p99: Double
    var max: Double
    var mean: Double

    /// Summarises `samples` (any order). Nil when there are none.
    init?(_ samples: [Double]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        count = sorted.count
        min = sorted[0]
        max = sorted[sorted.count - 1]
        p10 = percentile(sorted, 10)
        p50 = percentile(sorted, 50)
        p90 = percentile(sorted, 90)
        p99 = percentile(sorted, 99)
        mean = sorted.reduce(0, +) / Double(sorted.count)
    }

    /// Summarises repeated runs robustly: each percentile is the median over the rounds of that round's
    /// percentile, so a burst of background load during one round moves it little; count, min, max and
    /// mean are over all samples. Nil when there are no samples.
    init?(rounds: [[Double]]) {
        let each = rounds.compactMap { Summary($0) }
        guard let pooled = Summary(rounds.flatMap { $0 }) else { return nil }
        func middle(_ value: (Summary) -> Double) -> Double { medianValue(each.map(value)) ?? 0 }
        self.init(count: pooled.count, min: pooled.min, p10: middle(\.p10), p50: middle(\.p50), p90: middle(\.p90),
                  p99: middle(\.p99), max: pooled.max, mean: pooled.mean)
    }

    init(count: Int, min: Double, p10: Double, p50: Double, p90: Double, p99: Double, max: Double, mean: Double) {
        self.count = count; self.min = min; self.p10 = p10; self.p50 = p50; self.p90 = p90; self.p99 = p99
        self.max = max; self.mean = mean
    }

    /// The value of percentile `p` (one of those kept) by name, for tables.
    func value(_ p: Percentile) -> Double {
        switch p {
        case .min: min
        case .p10: p10
        case .p50: p50
        case .p90: p90
        case .p99: p99
        case .max: max
        }
    }
}

enum Percentile: String, CaseIterable, Sendable { case min, p10, p50, p90, p99, max }

/// The nearest-rank percentile `p` (0–100) of `sorted` (ascending, non-empty): the smallest sample such
/// that at least p% of the samples are less than or equal to it.
func percentile(_ sorted: [Double], _ p: Double) -> Double {
    precondition(!sorted.isEmpty, "percentile of no samples")
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
    return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
}

/// `value / floor`, or nil when the floor is not positive.
func ratio(_ value: Double, to floor: Double) -> Double? {
    floor > 0 ? value / floor : nil
}

/// The median of a few measurements (for repeated whole-process runs). Nil for none.
func medianValue(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// Fixed-point text for a number (no Foundation): `fixed(1.2345, 2)` is "1.23"; rounds half away from zero.
func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded(.toNearestOrAwayFromZero)
    guard scaled < 9e18 else { return String(value) }
    let units = UInt64(scaled)
    let whole = units / UInt64(scale)
    let sign = value < 0 && units != 0 ? "-" : ""
    guard decimals > 0 else { return sign + String(whole) }
    let fraction = String(units % UInt64(scale))
    return sign + String(whole) + "." + String(repeating: "0", count: decimals - fraction.count) + fraction
}

/// A latency in microseconds with a precision that suits its size: "0.04", "9.87", "45.2", "1234".
func micros(_ nanoseconds: Double) -> String {
    let us = nanoseconds / 1000
    if us < 10 { return fixed(us, 2) }
    if us < 100 { return fixed(us, 1) }
    return fixed(us, 0)
}

/// A ratio as "1.04x".
func times(_ value: Double?) -> String {
    guard let value else { return "-" }
    return fixed(value, value < 10 ? 2 : (value < 100 ? 1 : 0)) + "x"
}
