import EpollLoop
import Synchronization

/// Carries one PIO/MMIO access from a vCPU thread to a device actor and the reply back.
///
/// One per vCPU thread, reused for every exit. The fast path (``HandoffStrategy/inlineIfIdle``) never touches
/// `parker` or `result`: it claims the device's idle loop and calls the actor on the vCPU thread.
public final class ExitHandoff: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `result` is written by the device loop before `parker.signal()` and read
    // by the vCPU thread after `parker.wait()`; the semaphore orders the two. One access is in flight at a time.
    private let parker = ThreadParker()
    private var result: UInt64 = 0
    public let strategy: HandoffStrategy
    /// Accesses to actor devices that went through the device loop (enqueue or Task) instead of running
    /// inline; counted on that slow path only (for the benchmarks' placement rows).
    let slowPathAccesses = Atomic<Int>(0)

    public init(strategy: HandoffStrategy = .inlineIfIdle) { self.strategy = strategy }

    /// Performs a read of `width` bytes at `offset` of `target`.
    @inline(__always)
    public func read(_ target: BusTarget, offset: UInt64, width: Int) -> UInt64 {
        switch target {
        case .raw(let raw):
            return raw.read(offset: offset, width: width)
        case .router(let router):
            switch router.resolve(offset: offset, width: width, write: nil) {
            case .handled(let value): return value
            case .forward(.router, _): return ~0  // routers do not chain
            case .forward(let next, let nextOffset): return read(next, offset: nextOffset, width: width)
            }
        case .device(let device):
            let loop = device.loop
            if strategy == .inlineIfIdle,
               let value = loop.runIfIdle({ device.isolatedRead(offset: offset, width: width) }) {
                return value
            }
            slowPathAccesses.add(1, ordering: .relaxed)
            if strategy == .task {
                Task { [self] in
                    result = await device.read(offset: offset, width: width)
                    parker.signal()
                }
            } else {
                loop.execute { [self] in
                    result = device.isolatedRead(offset: offset, width: width)
                    parker.signal()
                }
            }
            parker.wait()
            return result
        }
    }

    /// Performs a write of the low `width` bytes of `value` at `offset` of `target`.
    @inline(__always)
    public func write(_ target: BusTarget, offset: UInt64, width: Int, value: UInt64) {
        switch target {
        case .raw(let raw):
            raw.write(offset: offset, width: width, value: value)
        case .router(let router):
            switch router.resolve(offset: offset, width: width, write: value) {
            case .handled, .forward(.router, _): return
            case .forward(let next, let nextOffset): write(next, offset: nextOffset, width: width, value: value)
            }
        case .device(let device):
            let loop = device.loop
            if strategy == .inlineIfIdle,
               loop.runIfIdle({ device.isolatedWrite(offset: offset, width: width, value: value) }) != nil {
                return
            }
            slowPathAccesses.add(1, ordering: .relaxed)
            if strategy == .task {
                Task { [self] in
                    await device.write(offset: offset, width: width, value: value)
                    parker.signal()
                }
            } else {
                loop.execute { [self] in
                    device.isolatedWrite(offset: offset, width: width, value: value)
                    parker.signal()
                }
            }
            parker.wait()
        }
    }
}
