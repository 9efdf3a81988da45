import ActorVmm
import EpollLoop

/// Port 0x80, the POST/debug port: firmware and kernels write boot-progress codes here. Each code is
/// logged with the time since the VMM started at `-v` (info), as Cloud Hypervisor does, up to 20 a second.
public actor DebugPort: BusDevice {
    public static let port: UInt64 = 0x80
    public static let size: UInt64 = 1

    public nonisolated let loop: EventLoop
    public private(set) var codes: [UInt8] = []
    let keep: Int
    /// Codes are guest-caused lines: a guest writing port 0x80 in a loop (Linux's `outb_p` delays do) logs
    /// at most 20 lines a second.
    public private(set) var logLimiter = LogRateLimiter(linesPerWindow: 20)

    /// `keep` bounds how many codes are remembered (for tests and counters), so a guest cannot grow it.
    public init(loop: EventLoop, keep: Int = 256) {
        self.loop = loop
        self.keep = keep
    }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        let code = UInt8(truncatingIfNeeded: value)
        if codes.count < keep { codes.append(code) }
        Log.guest(.info, &logLimiter, source: "debug port", "boot progress code \(hex(code))")
    }
}
