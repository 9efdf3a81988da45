import EpollLoop
import Glibc

/// Where a migration goes or comes from: Cloud Hypervisor's `unix:/path` and `tcp:host:port` URLs.
public enum MigrationEndpoint: Sendable, Equatable, CustomStringConvertible {
    case unix(String)
    /// An IPv4 address (dotted, or `localhost`) and a port.
    case tcp(host: String, port: UInt16)

    public init(url: String) throws(SnapshotError) {
        if url.hasPrefix("unix:") {
            let path = String(url.dropFirst(5))
            guard !path.isEmpty, path.utf8.count < 108 else { throw .invalid("'\(url)': a unix: URL needs a socket path shorter than 108 bytes") }
            self = .unix(path)
        } else if url.hasPrefix("tcp:") {
            let rest = url.dropFirst(4)
            guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]), port > 0 else {
                throw .invalid("'\(url)': a tcp: URL needs host:port (expected tcp:192.0.2.1:6000)")
            }
            let host = String(rest[..<colon])
            guard Self.ipv4(host == "localhost" ? "127.0.0.1" : host) != nil else {
                throw .invalid("'\(url)': '\(host)' is not an IPv4 address")
            }
            self = .tcp(host: host, port: port)
        } else {
            throw .invalid("'\(url)' is not a migration URL (expected unix:/path or tcp:host:port)")
        }
    }

    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .tcp(let host, let port): "tcp:\(host):\(port)"
        }
    }

    static func ipv4(_ host: String) -> in_addr? {
        var address = in_addr()
        return inet_pton(AF_INET, host, &address) == 1 ? address : nil
    }

    /// The socket address, for bind or connect.
    private func withAddress<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch self {
        case .unix(let path):
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { buffer in
                for (i, byte) in path.utf8.enumerated() where i < buffer.count - 1 { buffer[i] = byte }
            }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        case .tcp(let host, let port):
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr = Self.ipv4(host == "localhost" ? "127.0.0.1" : host) ?? in_addr()
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
    }

    private var family: Int32 {
        if case .unix = self { return AF_UNIX }
        return AF_INET
    }

    /// Connects to a listening destination.
    public func connect() throws(SnapshotError) -> MigrationChannel {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .io("cannot create a socket for \(self): \(Errno.current)") }
        let result = withAddress { Glibc.connect(fd, $0, $1) }
        guard result == 0 else {
            let error = Errno.current
            Glibc.close(fd)
            throw .io("cannot connect to \(self): \(error)")
        }
        return MigrationChannel(fd: fd)
    }

    /// Listens here and waits for one source to connect (as Cloud Hypervisor's receive-migration does);
    /// a unix socket's file is removed again afterwards. `cancelled` is asked every 100 ms: when it says
    /// yes (the VMM is exiting), the wait ends with an error.
    public func acceptOne(cancelled: () -> Bool = { false }) throws(SnapshotError) -> MigrationChannel {
        let listener = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw .io("cannot create a socket for \(self): \(Errno.current)") }
        defer {
            Glibc.close(listener)
            if case .unix(let path) = self { unlink(path) }
        }
        var on: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        guard withAddress({ bind(listener, $0, $1) }) == 0, listen(listener, 1) == 0 else {
            throw .io("cannot listen on \(self): \(Errno.current)")
        }
        while true {
            var ready = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            let polled = poll(&ready, 1, 100)
            if polled < 0 && errno != EINTR { throw .io("cannot wait for a migration on \(self): \(Errno.current)") }
            if cancelled() { throw .io("stopped waiting for a migration on \(self): the VMM is shutting down") }
            guard polled > 0 else { continue }
            let fd = accept(listener, nil, nil)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return MigrationChannel(fd: fd)
            }
            guard errno == EINTR else { throw .io("cannot accept a migration on \(self): \(Errno.current)") }
        }
    }
}
