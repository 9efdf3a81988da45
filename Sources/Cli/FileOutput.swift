import ActorVmm
import CKvm
import Devices
import EpollLoop
import Glibc
import Synchronization

/// Guest output to a host file descriptor (stdout for `tty`, a file for `file=PATH`, a pty master), which
/// never blocks the guest or a device loop.
///
/// The UART and virtio-console call ``write(_:)`` on a vCPU thread or a device loop. A blocking `write(2)`
/// there would freeze the VM as soon as the reader stops reading (a pipe nobody drains, a terminal on
/// hold, a pty nobody opened): the vCPU waits for the UART, the loop waits for the vCPU, and the stop
/// signal is never handled. So `write` only appends to a bounded buffer and wakes a writer thread of its
/// own, which does the blocking writes. When the buffer is full the newest bytes are dropped and counted
/// (``dropped``): a guest cannot make the VMM wait for, or hold unbounded memory for, a reader that is
/// not there. At exit ``flushAll(timeout:)`` gives every output a bounded time to drain.
final class FileOutput: SerialOutput {
    /// Bytes held for a slow reader before new output is dropped.
    static let capacity = 256 * 1024

    let writer: OutputWriter

    /// Writes to `fd`; `owned`: closed once the output is done with it (not for stdout).
    init(fd: Int32, owned: Bool) {
        writer = OutputWriter(fd: fd, descriptor: owned ? OwnedDescriptor(fd) : nil, capacity: Self.capacity)
    }

    /// Opens `path` for appending, creating it if needed: a regular file or a character device (a terminal,
    /// /dev/null), never a FIFO or socket, and without blocking in `open` (``HostFile``). The error is the
    /// reason only; the caller names the option or field and the path.
    init(path: String) throws(VirtioError) {
        let descriptor = try HostFile.open(path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o644,
                                           allowed: [.regular, .characterDevice])
        writer = OutputWriter(fd: descriptor.fd, descriptor: descriptor, capacity: Self.capacity)
    }

    /// The writer thread ends once it has written what is buffered, and closes an owned descriptor; waits
    /// briefly for that, so that a VM torn down holds no descriptor (unless its reader has stalled).
    deinit { writer.finish(waitingUpTo: 0.5) }

    func write(_ bytes: UnsafeRawBufferPointer) { writer.append(bytes) }

    /// Bytes dropped so far because the reader did not keep up.
    var dropped: UInt64 { writer.dropped }

    /// Waits up to `timeout` seconds in all for every live output to write what it holds; logs what is left.
    static func flushAll(timeout: Double) {
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        for writer in OutputWriter.live.withLock({ Array($0.values) }) {
            writer.flush(until: deadline)
        }
    }
}

/// The buffer and writer thread behind a ``FileOutput``. Shared between the appending thread (whichever
/// thread holds the device's isolation) and the writer thread, so everything mutable is in `state`.
final class OutputWriter: Sendable {
    struct State {
        var pending: [UInt8] = []
        var dropped: UInt64 = 0
        /// The writer thread is parked waiting for bytes (an append must wake it).
        var parked = false
        /// The writer thread is inside `write(2)` with bytes taken from `pending`.
        var writing = false
        /// No more appends will come: write what is left, then end.
        var finishing = false
        /// The descriptor failed (reader gone, EPIPE, EBADF...): everything from now on is dropped.
        var failed = false
        /// Closes `fd` when released (at the writer thread's end); nil when the descriptor is not ours.
        var descriptor: OwnedDescriptor?
        /// The writer thread has ended (and closed an owned descriptor).
        var ended = false
    }

    /// Every writer whose thread is running, for ``FileOutput/flushAll(timeout:)``.
    static let live = Mutex<[ObjectIdentifier: OutputWriter]>([:])

    let fd: Int32
    let capacity: Int
    let state: Mutex<State>
    let wake = ThreadParker()

    init(fd: Int32, descriptor: OwnedDescriptor?, capacity: Int) {
        self.fd = fd
        self.capacity = capacity
        state = Mutex(State(descriptor: descriptor))
        Self.live.withLock { $0[ObjectIdentifier(self)] = self }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        if pthread_create(&thread, nil, outputWriterThreadEntry, context) == 0 {
            pthread_detach(thread)
        } else {
            // No thread: write synchronously is what we must not do, so output is dropped (and said so).
            Unmanaged<OutputWriter>.fromOpaque(context).release()
            state.withLock { $0.failed = true; $0.ended = true }
            Self.live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
            Log.warning("guest output to fd \(fd) is dropped: cannot start its writer thread")
        }
    }

    var dropped: UInt64 { state.withLock { $0.dropped } }

    /// Buffers `bytes` (dropping what does not fit) and wakes the writer thread if it is parked.
    func append(_ bytes: UnsafeRawBufferPointer) {
        let wakeWriter = state.withLock { s -> Bool in
            let room = s.failed ? 0 : max(0, capacity - s.pending.count)
            let taken = min(room, bytes.count)
            if taken > 0 { s.pending.append(contentsOf: bytes[0..<taken]) }
            s.dropped &+= UInt64(bytes.count - taken)
            guard s.parked, taken > 0 else { return false }
            s.parked = false
            return true
        }
        if wakeWriter { wake.signal() }
    }

    /// Tells the writer thread to end after writing what is buffered, and waits up to `timeout` seconds for
    /// it to have ended.
    func finish(waitingUpTo timeout: Double) {
        let wakeWriter = state.withLock { s -> Bool in
            s.finishing = true
            defer { s.parked = false }
            return s.parked
        }
        if wakeWriter { wake.signal() }
        _ = waitUntil(monotonicNanoseconds() + UInt64(timeout * 1e9)) { $0.ended }
    }

    /// Polls `condition` on the state every millisecond until it holds (true) or `deadline` passes (false).
    private func waitUntil(_ deadline: UInt64, _ condition: (borrowing State) -> Bool) -> Bool {
        while !state.withLock({ condition($0) }) {
            guard monotonicNanoseconds() < deadline else { return false }
            usleep(1000)
        }
        return true
    }

    /// Waits until nothing is buffered or in flight, or `deadline` passes (then logs what is left).
    func flush(until deadline: UInt64) {
        if waitUntil(deadline, { ($0.pending.isEmpty && !$0.writing) || $0.failed }) { return }
        let (left, dropped) = state.withLock { ($0.pending.count + ($0.writing ? 1 : 0), $0.dropped) }
        Log.warning("guest output to fd \(fd) not read: \(left)+ bytes left unwritten, \(dropped) dropped")
    }

    /// The writer thread: takes the buffered bytes, writes them (blocking), and parks when there are none.
    func run() {
        var chunk: [UInt8] = []
        while true {
            let next = state.withLock { s -> Bool? in
                s.writing = false
                if s.pending.isEmpty {
                    if s.finishing || s.failed { return nil }
                    s.parked = true
                    return false
                }
                swap(&chunk, &s.pending)
                s.pending.removeAll(keepingCapacity: true)
                s.writing = true
                return true
            }
            switch next {
            case nil:
                state.withLock { s in
                    s.descriptor = nil  // closes an owned descriptor
                    s.ended = true
                }
                Self.live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
                return
            case false?:
                wake.wait()
            case true?:
                if !writeAll(chunk) {
                    state.withLock { s in
                        s.failed = true
                        s.dropped &+= UInt64(s.pending.count)
                        s.pending.removeAll()
                    }
                }
                chunk.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Writes every byte, retrying partial writes and EINTR; false once the descriptor fails.
    private func writeAll(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                offset += n
            }
            return true
        }
    }
}

/// The writer thread's entry point (a free function: a closure literal here would inherit the caller's
/// isolation, which a pthread does not have).
private func outputWriterThreadEntry(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let writer = Unmanaged<OutputWriter>.fromOpaque(context!).takeRetainedValue()
    _ = ckvm_set_thread_name("vmm-output")
    writer.run()
    return nil
}
