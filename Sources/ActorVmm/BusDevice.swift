import EpollLoop

/// A device register block on the PIO or MMIO bus, as an actor on an ``EventLoop``.
///
/// The bus passes offsets from the base of the device's range, never absolute addresses. `width` is the
/// access size in bytes (1, 2, 4 or 8). Reads return the value in the low `width` bytes. Both methods run
/// only under the actor's isolation: on the loop thread, or on a vCPU thread that claimed the idle loop.
/// Its executor is its ``LoopBound/loop``.
public protocol BusDevice: LoopBound {
    func read(offset: UInt64, width: Int) -> UInt64
    func write(offset: UInt64, width: Int, value: UInt64)
}

extension BusDevice {
    /// Enters the actor from a thread that owns its loop (checked by `assumeIsolated`).
    @inline(__always)
    nonisolated func isolatedRead(offset: UInt64, width: Int) -> UInt64 {
        assumeIsolated { $0.read(offset: offset, width: width) }
    }

    @inline(__always)
    nonisolated func isolatedWrite(offset: UInt64, width: Int, value: UInt64) {
        assumeIsolated { $0.write(offset: offset, width: width, value: value) }
    }
}

/// A register block handled directly on the vCPU thread, with no actor: the latency floor the benchmarks
/// compare actor hand-offs against. Implementations must be thread-safe on their own (e.g. atomics).
public protocol RawBusDevice: Sendable {
    func read(offset: UInt64, width: Int) -> UInt64
    func write(offset: UInt64, width: Int, value: UInt64)
}

/// How a vCPU thread hands a PIO/MMIO exit to an actor device.
public enum HandoffStrategy: String, Sendable, CaseIterable {
    /// Claim the device's loop with one compare-exchange when idle and run the handler on the vCPU thread;
    /// enqueue and wait only when the loop is busy. The default.
    case inlineIfIdle = "inline"
    /// Always enqueue a closure on the device's loop and block until it has run.
    case enqueueAndWait = "enqueue"
    /// Start a Swift `Task` on the device actor and block until it has run (for comparison only).
    case task = "task"
}
