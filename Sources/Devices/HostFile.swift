import EpollLoop
import Glibc

/// A host descriptor that closes itself when the last reference to it goes: an opened disk image, rng
/// source or TAP can be prepared before a VM exists, shared with the device that uses it, and dropped on
/// any path (a create that fails later, a delete before any boot, a teardown) without leaking.
public final class OwnedDescriptor: Sendable {
    public let fd: Int32

    public init(_ fd: Int32) { self.fd = fd }

    deinit { close(fd) }
}

/// What a path names on the host, for the checks of ``HostFile/open(_:flags:mode:allowed:keepNonBlocking:)``.
public enum HostFileKind: Sendable, CaseIterable {
    case regular, characterDevice, blockDevice, directory, fifo, socket, symbolicLink, other

    init(mode: mode_t) {
        self = switch mode & S_IFMT {
        case S_IFREG: .regular
        case S_IFCHR: .characterDevice
        case S_IFBLK: .blockDevice
        case S_IFDIR: .directory
        case S_IFIFO: .fifo
        case S_IFSOCK: .socket
        case S_IFLNK: .symbolicLink
        default: .other
        }
    }

    /// "a FIFO", "a regular file": for error messages.
    public var name: String {
        switch self {
        case .regular: "a regular file"
        case .characterDevice: "a character device"
        case .blockDevice: "a block device"
        case .directory: "a directory"
        case .fifo: "a FIFO"
        case .socket: "a socket"
        case .symbolicLink: "a symbolic link"
        case .other: "a special file"
        }
    }
}

/// Opening files a configuration names (disk images, the rng source, serial and console files) so that
/// the open itself can never block: a FIFO with no peer or a terminal waiting for its carrier would hold the
/// caller in `open(2)`, and the caller is the VMM's controller.
public enum HostFile {
    /// Opens `path` with `O_NONBLOCK | O_CLOEXEC` added to `flags` and checks that it is one of the `allowed`
    /// kinds, first by `stat` (so a FIFO is refused without being opened) and again on the descriptor. Unless
    /// `keepNonBlocking`, the descriptor is made blocking again before it is returned. Errors are the reason
    /// only ("cannot open: No such file or directory", "is a FIFO (expected a regular file)"); callers add
    /// the option or field and the path.
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0, allowed: Set<HostFileKind>,
                            keepNonBlocking: Bool = false) throws(VirtioError) -> OwnedDescriptor {
        var info = stat()
        if stat(path, &info) == 0 { try check(HostFileKind(mode: info.st_mode), allowed) }
        let fd = Glibc.open(path, flags | O_NONBLOCK | O_CLOEXEC, mode)
        guard fd >= 0 else { throw VirtioError("cannot open: \(Errno.current)") }
        let descriptor = OwnedDescriptor(fd)
        guard fstat(fd, &info) == 0 else { throw VirtioError("cannot inspect: \(Errno.current)") }
        try check(HostFileKind(mode: info.st_mode), allowed)
        if !keepNonBlocking {
            let status = fcntl(fd, F_GETFL)
            guard status >= 0, fcntl(fd, F_SETFL, status & ~O_NONBLOCK) == 0 else {
                throw VirtioError("cannot make it blocking: \(Errno.current)")
            }
        }
        return descriptor
    }

    private static func check(_ kind: HostFileKind, _ allowed: Set<HostFileKind>) throws(VirtioError) {
        guard !allowed.contains(kind) else { return }
        let expected = HostFileKind.allCases.filter(allowed.contains).map(\.name).joined(separator: " or ")
        throw VirtioError("is \(kind.name) (expected \(expected))")
    }
}
