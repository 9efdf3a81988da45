import EpollLoop
import Glibc
import Synchronization

/// Leveled logging to stderr (or a log file), with no Foundation and no allocation when a level is off.
public enum Log {
    public enum Level: Int, Sendable, Comparable {
        case error = 0, warning, info, debug, trace
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var tag: String {
            switch self {
            case .error: "error"
            case .warning: "warning"
            case .info: "info"
            case .debug: "debug"
            case .trace: "trace"
            }
        }
    }

    private static let level = Atomic<Int>(Level.warning.rawValue)
    private static let sink = Atomic<Int32>(2)
    private static let start = monotonicNanoseconds()

    /// Messages at or below `level` are written. `-v` is info, `-vv` debug, `-vvv` trace.
    public static func setLevel(_ newLevel: Level) { level.store(newLevel.rawValue, ordering: .relaxed) }
    /// Writes messages to `fd` instead of stderr.
    public static func setSink(fd: Int32) { sink.store(fd, ordering: .relaxed) }

    @inline(__always)
    public static func enabled(_ l: Level) -> Bool { l.rawValue <= level.load(ordering: .relaxed) }

    /// Seconds since the process started, for timestamps ("[   0.001234]").
    public static func timestamp() -> String {
        let origin = start  // initialised on first use: read it before taking "now"
        let now = monotonicNanoseconds()
        let us = (now > origin ? now - origin : 0) / 1000
        let frac = String(us % 1_000_000)
        let secs = String(us / 1_000_000)
        return "[" + String(repeating: " ", count: max(0, 4 - secs.count)) + secs + "."
            + String(repeating: "0", count: 6 - frac.count) + frac + "]"
    }

    public static func write(_ l: Level, _ message: @autoclosure () -> String) {
        guard enabled(l) else { return }
        let line = timestamp() + " actor-vmm " + l.tag + ": " + message() + "\n"
        var bytes = Array(line.utf8)
        let fd = sink.load(ordering: .relaxed)
        bytes.withUnsafeMutableBytes { buffer in _ = Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    public static func error(_ m: @autoclosure () -> String) { write(.error, m()) }
    public static func warning(_ m: @autoclosure () -> String) { write(.warning, m()) }
    public static func info(_ m: @autoclosure () -> String) { write(.info, m()) }
    public static func debug(_ m: @autoclosure () -> String) { write(.debug, m()) }
}

/// "0x" followed by lower-case hex digits.
public func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }
