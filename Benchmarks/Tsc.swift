// The time-stamp counter as a clock: per-exit timestamps are TSC readings (cheap: no system call, no
// vDSO), converted to nanoseconds with a rate calibrated against CLOCK_MONOTONIC at start-up.
import CKvm
import EpollLoop
import Glibc

struct TscClock: Sendable {
    /// TSC ticks per nanosecond.
    let ticksPerNanosecond: Double

    /// Calibrates over `milliseconds` of wall time (the TSC is invariant on this host: constant_tsc,
    /// nonstop_tsc). Takes the best of three short windows to reduce the effect of preemption.
    static func calibrate(milliseconds: Int = 60) -> TscClock {
        var rates: [Double] = []
        for _ in 0..<3 {
            let wall0 = monotonicNanoseconds(), tsc0 = ckvm_rdtsc()
            usleep(UInt32(milliseconds * 1000 / 3))
            let tsc1 = ckvm_rdtsc(), wall1 = monotonicNanoseconds()
            rates.append(Double(tsc1 &- tsc0) / Double(wall1 - wall0))
        }
        return TscClock(ticksPerNanosecond: medianValue(rates) ?? 1)
    }

    func nanoseconds(_ ticks: UInt64) -> Double { Double(ticks) / ticksPerNanosecond }

    /// `to - from` in nanoseconds, negative if `to` is earlier (stamps taken on two CPUs).
    func nanoseconds(from: UInt64, to: UInt64) -> Double {
        Double(Int64(bitPattern: to &- from)) / ticksPerNanosecond
    }

    /// The TSC rate in Hz (for the report).
    var hertz: Double { ticksPerNanosecond * 1e9 }
}
