import CKvm
import Glibc

/// A reusable binary wake-up between two threads: one thread `wait()`s, another `signal()`s.
/// Used by vCPU threads to wait for a device executor's reply. Built on a POSIX semaphore (a futex).
public final class ThreadParker: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `semaphore` is an immutable pointer to a sem_t, which POSIX makes safe to
    // post and wait from any thread; it is freed only in deinit, when no thread can hold a reference.
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    /// Wakes the waiter (or lets the next `wait()` return at once).
    public func signal() { sem_post(semaphore) }

    /// Blocks until `signal()`; retries when a signal handler interrupts the wait.
    public func wait() {
        while sem_wait(semaphore) != 0 && ckvm_errno() == EINTR {}
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }
}
