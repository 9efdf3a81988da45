import CKvm
import Glibc

/// An owned `eventfd(2)`: a 64-bit counter that can be waited on with epoll and handed to KVM
/// (`KVM_IOEVENTFD`, `KVM_IRQFD`). Closed when the value is dropped.
public struct EventFD: ~Copyable, Sendable {
    /// The raw descriptor, for registering with epoll or KVM. Owned by this value.
    public let rawValue: Int32

    /// Creates a non-blocking, close-on-exec eventfd with a zero counter.
    /// The corresponding C function is `eventfd`.
    public init() throws(Errno) {
        rawValue = try syscallValue { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
    }

    /// Adds `value` to the counter (wakes epoll waiters). An overflowing counter (`EAGAIN`) already means
    /// "signalled", so it is not an error.
    public func signal(_ value: UInt64 = 1) { Self.signalRaw(rawValue, value) }

    /// Reads and resets the counter; returns 0 if it was not signalled.
    @discardableResult
    public func drain() -> UInt64 { Self.drainRaw(rawValue) }

    deinit { close(rawValue) }
}

extension EventFD {
    /// Reads and resets the counter of a borrowed eventfd descriptor (for handlers that captured the raw fd).
    @discardableResult
    public static func drainRaw(_ fd: Int32) -> UInt64 {
        var value: UInt64 = 0
        let count = withUnsafeMutableBytes(of: &value) { buffer in
            (try? syscallValue { read(fd, buffer.baseAddress, 8) }) ?? 0
        }
        return count == 8 ? value : 0
    }

    /// Adds to the counter of a borrowed eventfd descriptor.
    public static func signalRaw(_ fd: Int32, _ value: UInt64 = 1) {
        var value = value
        _ = withUnsafeBytes(of: &value) { buffer in
            try? syscallValue { write(fd, buffer.baseAddress, 8) }
        }
    }
}
