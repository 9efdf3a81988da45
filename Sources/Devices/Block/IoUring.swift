import CKvm
import EpollLoop
import Glibc

/// An io_uring locked to one image file (the C side is Sources/CKvm/uring.c): READV, WRITEV and a
/// draining fdatasync on fixed file 0, nothing else. Completions are signalled on ``eventFD`` (registered
/// with IORING_REGISTER_EVENTFD), which the device watches on its loop.
///
/// Not thread-safe: one owner (the block backend, inside its device actor) submits and reaps.
final class IoUring {
    /// The C ring state; its address must not move (the kernel's mappings are reached through it).
    private let ring: UnsafeMutablePointer<ckvm_uring>
    /// Signalled by the kernel when completions are posted (EFD_NONBLOCK, so draining never blocks).
    let eventFD: Int32
    /// The number of SQEs (at least what was asked for).
    var entries: Int { Int(ring.pointee.sq_entries) }

    /// Sets up a ring of at least `entries` SQEs on `fd`; throws the kernel's reason when io_uring is
    /// unavailable (ENOSYS: no io_uring; EPERM: disabled by sysctl or a seccomp filter; ENOMEM: locked memory).
    init(entries: Int, fd: Int32) throws(Errno) {
        let event = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard event >= 0 else { throw Errno.current }
        ring = .allocate(capacity: 1)
        let result = ckvm_uring_init(ring, UInt32(entries), fd, event)
        guard result == 0 else {
            ring.deallocate()
            close(event)
            throw Errno(rawValue: -result)
        }
        eventFD = event
    }

    deinit {
        ckvm_uring_exit(ring)  // the owner waited for everything in flight first
        ring.deallocate()
        close(eventFD)
    }

    /// Queues a read (`write` false) or write of the image at `offset` from or to `count` iovecs at
    /// `iovecs`, which must stay valid (as must the buffers they name) until the completion is reaped.
    /// False when the submission ring is full.
    func queueTransfer(write: Bool, iovecs: UnsafePointer<iovec>, count: Int, offset: UInt64, tag: UInt64) -> Bool {
        ckvm_uring_prep_rw(ring, write ? 1 : 0, iovecs, UInt32(count), offset, tag) == 0
    }

    /// Queues an fdatasync that starts only after everything queued before it has completed.
    func queueFlushAfterAll(tag: UInt64) -> Bool {
        ckvm_uring_prep_fdatasync_after_all(ring, tag) == 0
    }

    /// Submits what is queued and waits until `wait` completions are posted; the kernel's error, if any.
    @discardableResult
    func submit(wait: Int = 0) -> Errno? {
        let result = ckvm_uring_submit(ring, UInt32(wait))
        return result < 0 ? Errno(rawValue: -result) : nil
    }

    /// Submits an operation outside the allowed ones (for the tests): the kernel's result, -EACCES when the
    /// restrictions hold. Only on an idle ring.
    func probeForbiddenOperation() -> Int32 { ckvm_uring_probe_forbidden(ring) }

    /// Takes one completion: its tag and result (bytes moved, or a negated errno), or nil when none is posted.
    func reap() -> (tag: UInt64, result: Int32)? {
        var tag: UInt64 = 0, result: Int32 = 0
        guard ckvm_uring_peek(ring, &tag, &result) == 1 else { return nil }
        return (tag, result)
    }
}
