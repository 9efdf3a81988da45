import ActorVmm
import Glibc

/// A scatter/gather list over guest buffers (and a host buffer), for one `readv` or `writev` on a TAP:
/// frames go between guest memory and the TAP without a copy. Kept by its owner and refilled for each
/// frame, so the array's storage is reused.
struct IovecList {
    /// At most this many entries (the kernel's UIO_MAXIOV).
    static let limit = 1024
    private(set) var entries: [iovec] = []
    private(set) var byteCount = 0

    var count: Int { entries.count }

    mutating func removeAll() {
        entries.removeAll(keepingCapacity: true)
        byteCount = 0
    }

    /// Appends guest `buffers` (validated: each lies in one RAM region). False when one does not, or when
    /// the list would pass ``limit``; the list is then unchanged.
    mutating func append(_ buffers: [GuestBuffer], memory: GuestMemory) -> Bool {
        guard entries.count + buffers.count <= Self.limit else { return false }
        let mark = entries.count, bytes = byteCount
        for buffer in buffers where buffer.length > 0 {
            guard let pointer = try? memory.hostPointer(buffer.address, Int(buffer.length)) else {
                entries.removeSubrange(mark...)
                byteCount = bytes
                return false
            }
            entries.append(iovec(iov_base: pointer, iov_len: Int(buffer.length)))
            byteCount += Int(buffer.length)
        }
        return true
    }

    /// Appends a host buffer (the caller keeps it alive until the system call is done).
    mutating func append(host pointer: UnsafeMutableRawPointer, count: Int) {
        guard count > 0 else { return }
        entries.append(iovec(iov_base: pointer, iov_len: count))
        byteCount += count
    }

    /// `readv(fd)` into the list: bytes read, or -1 with errno.
    func read(from fd: Int32) -> Int {
        // SAFETY: every entry points into guest RAM (checked by hostPointer, mapped for the VM's life) or
        // into a host buffer its owner keeps alive; the kernel writes at most iov_len bytes to each.
        entries.withUnsafeBufferPointer { readv(fd, $0.baseAddress, Int32($0.count)) }
    }

    /// `writev(fd)` from the list: bytes written, or -1 with errno.
    func write(to fd: Int32) -> Int {
        // SAFETY: as in read(from:); the kernel only reads the entries' memory.
        entries.withUnsafeBufferPointer { writev(fd, $0.baseAddress, Int32($0.count)) }
    }
}
