import Devices
import Glibc

/// Serial output to a file descriptor (stdout for `tty`, a file for `file=PATH`), one write per call.
final class FileOutput: SerialOutput {
    let fd: Int32
    let owned: Bool

    init(fd: Int32, owned: Bool) {
        self.fd = fd
        self.owned = owned
    }

    /// Opens `path` for appending, creating it if needed.
    convenience init(path: String, option: String) throws(CliError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CliError("\(option) file=\(path): cannot open: \(String(cString: strerror(errno)))") }
        self.init(fd: fd, owned: true)
    }

    deinit { if owned { close(fd) } }

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
