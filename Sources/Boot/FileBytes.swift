import Glibc

/// Reads a whole regular file (kernel, initramfs) without Foundation. Opened with `O_NONBLOCK`, so a FIFO
/// (which would block `open` until a writer came) is refused at once instead; so is anything else that is not a
/// regular file. A file larger than `limit` bytes (what can fit in the guest's RAM) is refused before it is
/// read: a huge (or sparse) file named by a config must not exhaust the VMM's memory or hold it reading.
func readWholeFile(_ path: String, limit: UInt64) throws(BootError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
    guard (info.st_mode & S_IFMT) == S_IFREG else {
        let kind = switch info.st_mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFDIR: "a directory"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "a special file"
        }
        throw .unreadable(path: path, reason: "not a regular file (\(kind))")
    }
    guard info.st_size >= 0, UInt64(info.st_size) <= limit else {
        throw .unreadable(path: path, reason: "\(info.st_size) bytes is more than the guest's RAM (\(limit) bytes)")
    }
    let size = Int(info.st_size)
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw .unreadable(path: path, reason: n == 0 ? "file shrank while reading" : String(cString: strerror(errno))) }
        done += n
    }
    return bytes
}
