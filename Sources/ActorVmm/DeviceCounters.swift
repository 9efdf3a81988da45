import Synchronization

/// What a device has done, counted where it happens and readable from any thread at any time
/// (`vm.counters`). Relaxed atomics: each counter is exact, but a reader may see one counter a little ahead
/// of another. Counts wrap rather than trap.
///
/// The vCPU exit path counts the register accesses it delivers to a bus range (``countAccesses(_:width:)``);
/// devices may count their own requests, errors and interrupts in the same object.
public final class DeviceCounters: Sendable {
    /// Requests handled: register accesses (PIO/MMIO exits) for a bus range.
    public let requests = Atomic<UInt64>(0)
    /// Bytes those requests moved.
    public let bytes = Atomic<UInt64>(0)
    /// Requests that failed (a malformed request from the guest, a host I/O error).
    public let errors = Atomic<UInt64>(0)
    /// Interrupts the device sent.
    public let interrupts = Atomic<UInt64>(0)

    public init() {}

    /// Counts `count` accesses of `width` bytes each.
    @inline(__always)
    public func countAccesses(_ count: Int, width: Int) {
        requests.wrappingAdd(UInt64(truncatingIfNeeded: count), ordering: .relaxed)
        bytes.wrappingAdd(UInt64(truncatingIfNeeded: count &* width), ordering: .relaxed)
    }
}
