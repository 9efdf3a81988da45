import EpollLoop
import Glibc

/// A socket set-up failure, as one line naming the path or descriptor.
struct SocketError: Error, Equatable, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// Unix-domain stream sockets: the API server's listener and the client's connection.
enum UnixSocket {
    /// The longest path `sockaddr_un.sun_path` can hold (108 bytes with the terminating NUL).
    static let maxPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// A listener bound to a path, and the file's identity so that only our own socket file is removed.
    struct Listener {
        let fd: Int32
        let path: String?
        let device: UInt64
        let inode: UInt64
    }

    /// Calls `body` with the address of `path`; throws if the path does not fit.
    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws(SocketError) -> R {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maxPathLength, !bytes.contains(0) else {
            throw SocketError("\(path): a socket path must be 1 to \(maxPathLength) bytes")
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// Creates a non-blocking listening socket at `path`. A stale socket file left by a process that is gone
    /// (connecting is refused) is replaced; a socket someone is serving, or a file that is not a socket, is
    /// an error: we never delete what is not ours to delete.
    static func listen(path: String, backlog: Int32 = 64) throws(SocketError) -> Listener {
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else { throw SocketError("\(path): exists and is not a socket") }
            let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let connected = try withAddress(path) { Glibc.connect(probe, $0, $1) } == 0
            let error = errno
            Glibc.close(probe)
            if connected { throw SocketError("\(path): in use (another process is serving it)") }
            guard error == ECONNREFUSED else { throw SocketError("\(path): cannot check the existing socket: \(Errno(error))") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("\(path): cannot create a socket: \(Errno(errno))") }
        do throws(SocketError) {
            guard try withAddress(path, { bind(fd, $0, $1) }) == 0 else { throw SocketError("\(path): cannot bind: \(Errno(errno))") }
            guard Glibc.listen(fd, backlog) == 0 else { throw SocketError("\(path): cannot listen: \(Errno(errno))") }
            guard stat(path, &info) == 0 else { throw SocketError("\(path): cannot stat the new socket: \(Errno(errno))") }
        } catch {
            Glibc.close(fd)
            throw error
        }
        return Listener(fd: fd, path: path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Adopts an inherited descriptor (`--api-socket fd=N`): it must be a listening unix stream socket.
    /// It is made non-blocking and close-on-exec.
    static func adopt(fd: Int32) throws(SocketError) -> Listener {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SocketError("fd=\(fd): not an open descriptor: \(Errno(errno))") }
        guard info.st_mode & S_IFMT == S_IFSOCK else { throw SocketError("fd=\(fd): not a socket") }
        var domain: Int32 = 0, listening: Int32 = 0, type: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0, domain == AF_UNIX else {
            throw SocketError("fd=\(fd): not a unix-domain socket")
        }
        size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0, type == Int32(SOCK_STREAM.rawValue) else {
            throw SocketError("fd=\(fd): not a stream socket")
        }
        size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0, listening == 1 else {
            throw SocketError("fd=\(fd): the socket is not listening")
        }
        setNonBlocking(fd)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return Listener(fd: fd, path: nil, device: 0, inode: 0)
    }

    /// Closes the listener and removes its socket file if the path still names the file we created.
    static func close(_ listener: Listener) {
        Glibc.close(listener.fd)
        guard let path = listener.path else { return }
        var info = stat()
        if stat(path, &info) == 0, UInt64(info.st_dev) == listener.device, UInt64(info.st_ino) == listener.inode {
            unlink(path)
        }
    }

    /// Connects to the socket at `path` (blocking; for the client).
    static func connect(path: String) throws(SocketError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("cannot create a socket: \(Errno(errno))") }
        let result: Int32
        do throws(SocketError) {
            result = try withAddress(path) { Glibc.connect(fd, $0, $1) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        guard result == 0 else {
            let error = Errno(errno)
            Glibc.close(fd)
            throw SocketError("cannot connect to \(path): \(error)")
        }
        return fd
    }

    static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
}

extension Errno {
    init(_ rawValue: Int32) { self.init(rawValue: rawValue) }
}
