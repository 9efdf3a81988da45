import Devices
import Glibc

/// Serial output to a file descriptor (stdout for `tty`, a file for `file=PATH`), one write per call.
final class FileOutput: SerialOutput {
    let fd: Int32
    /// Closes `fd` with the last reference; nil when the descriptor is not ours (stdout).
    private let descriptor: OwnedDescriptor?

    init(fd: Int32, owned: Bool) {
        self.fd = fd
        descriptor = owned ? OwnedDescriptor(fd) : nil
    }

    /// Opens `path` for appending, creating it if needed: a regular file or a character device (a terminal,
    /// /dev/null), never a FIFO or socket, and without blocking in `open` (``HostFile``). The error is the
    /// reason only; the caller names the option or field and the path.
    init(path: String) throws(VirtioError) {
        let descriptor = try HostFile.open(path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o644,
                                           allowed: [.regular, .characterDevice])
        fd = descriptor.fd
        self.descriptor = descriptor
    }

    func write(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }  // output closed: the guest keeps running, its output is lost
            offset += n
        }
    }
}
