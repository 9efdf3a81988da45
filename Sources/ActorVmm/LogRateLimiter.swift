import EpollLoop

/// Bounds the log lines a guest can cause: at most `linesPerWindow` lines per window (one second by
/// default) for one source (a device); lines over the limit are counted, and the count is reported in one
/// line ("K similar warnings suppressed") before the next line that is let through, or by ``flush``.
///
/// A hostile or broken driver can produce a bad request per microsecond; without this, one warning each
/// filled the log at megabytes per second. Lives inside its owner's isolation (a device actor).
public struct LogRateLimiter: Sendable {
    public let linesPerWindow: Int
    public let windowNanoseconds: UInt64
    private var windowStart: UInt64?
    private var linesInWindow = 0
    /// Lines dropped since the last summary.
    public private(set) var pendingSuppressed: UInt64 = 0
    /// Lines dropped in total (for tests and counters).
    public private(set) var totalSuppressed: UInt64 = 0

    public init(linesPerWindow: Int = 5, window: Duration = .seconds(1)) {
        self.linesPerWindow = linesPerWindow
        let (seconds, attoseconds) = window.components
        windowNanoseconds = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }

    /// Whether a line at time `now` may be written; when it may, also how many lines were suppressed
    /// before it (to report first). A suppressed line is counted.
    public mutating func admit(now: UInt64) -> (allowed: Bool, suppressedBefore: UInt64) {
        if let start = windowStart, now &- start < windowNanoseconds {
            guard linesInWindow < linesPerWindow else {
                pendingSuppressed &+= 1
                totalSuppressed &+= 1
                return (false, 0)
            }
        } else {
            windowStart = now
            linesInWindow = 0
        }
        linesInWindow += 1
        defer { pendingSuppressed = 0 }
        return (true, pendingSuppressed)
    }

    /// Takes the count of lines suppressed since the last summary (e.g. to report it at device reset).
    public mutating func flush() -> UInt64 {
        defer { pendingSuppressed = 0 }
        return pendingSuppressed
    }
}

extension Log {
    /// A line caused by the guest, written through `limiter`: `source: message`, preceded by a summary of
    /// what the limiter suppressed since the last line it let through. The limiter counts whether or not
    /// `level` is enabled, so what it suppresses does not depend on `-v`.
    public static func guest(_ level: Level, _ limiter: inout LogRateLimiter, source: String,
                             _ message: @autoclosure () -> String) {
        let (allowed, suppressed) = limiter.admit(now: monotonicNanoseconds())
        guard allowed, enabled(level) else { return }
        if suppressed > 0 { write(level, "\(source): \(suppressed) similar guest-caused messages suppressed") }
        write(level, "\(source): \(message())")
    }

    /// ``guest(_:_:source:_:)`` at warning level.
    public static func guestWarning(_ limiter: inout LogRateLimiter, source: String,
                                    _ message: @autoclosure () -> String) {
        guest(.warning, &limiter, source: source, message())
    }

    /// Reports what `limiter` suppressed since its last line, if anything (at device reset or stop).
    public static func flushSuppressed(_ limiter: inout LogRateLimiter, source: String, level: Level = .warning) {
        let suppressed = limiter.flush()
        if suppressed > 0 { write(level, "\(source): \(suppressed) similar guest-caused messages suppressed") }
    }
}
