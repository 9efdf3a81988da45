import EpollLoop

/// Limits and timeouts of an ``HttpServer``.
struct HttpServerConfig: Sendable {
    var limits = HttpLimits()
    /// Connections open at once; one more is answered 503 and closed.
    var maxConnections = 32
    /// A request must arrive in full within this time of its first byte; a slower client gets 408 and is
    /// disconnected. (A new connection gets this long to start its first request.)
    var requestTimeout: Duration = .seconds(10)
    /// A kept-alive connection with no request in progress is closed after this long.
    var idleTimeout: Duration = .seconds(30)
    /// A client must take its response within this time, or it is disconnected.
    var writeTimeout: Duration = .seconds(10)

    /// Bytes a connection may buffer: one maximal request and a little of the next.
    var maxBuffered: Int { limits.maxHeaderBytes + limits.maxBodyBytes + 4096 }

    /// How often deadlines are checked while connections are open.
    var sweepInterval: Duration {
        let shortest = min(requestTimeout, idleTimeout, writeTimeout) / 4
        return min(max(shortest, .milliseconds(10)), .seconds(1))
    }
}

/// One client connection of an ``HttpServer``: its buffers, where it is in the request/response cycle,
/// and its deadline. Owned by the server actor and touched only under its isolation.
final class HttpConnection {
    /// Where the connection is. Requests on one connection are answered one at a time, in order.
    enum Phase {
        /// Waiting for (the rest of) a request.
        case reading
        /// A whole request is with the handler; later bytes (pipelined requests) wait in `input`.
        case handling
        /// A response is being written.
        case writing
    }

    /// What the current deadline stands for.
    enum DeadlineKind {
        case none, idle, request, write
    }

    let id: UInt64
    let fd: Int32
    var registration: Registration?
    /// The epoll interest currently registered (empty: not registered at all).
    var interest: IOEvents = []
    var phase = Phase.reading
    var input: [UInt8] = []
    var parser: HttpRequestParser
    var output: [UInt8] = []
    var outputOffset = 0
    /// The client shut down its side (read returned 0): answer what is complete, then close.
    var peerClosed = false
    /// Close once `output` is written (an error response, `Connection: close`, or HTTP/1.0).
    var closeAfterWrite = false
    /// `100 Continue` was sent for the current request.
    var continueSent = false
    var deadline: UInt64 = 0
    var deadlineKind = DeadlineKind.none
    /// Run when the response in `output` is written, or when the connection closes first.
    var afterSend: [@Sendable () -> Void] = []

    init(id: UInt64, fd: Int32, limits: HttpLimits) {
        self.id = id
        self.fd = fd
        parser = HttpRequestParser(limits: limits)
    }

    var hasPendingOutput: Bool { outputOffset < output.count }

    /// Sets the deadline unless one of the same kind is already running (a request's deadline is not
    /// extended by each byte that trickles in: that is how slow clients are cut off).
    func setDeadline(_ kind: DeadlineKind, after delay: Duration) {
        guard kind != deadlineKind else { return }
        deadlineKind = kind
        deadline = kind == .none ? 0 : monotonicNanoseconds() &+ delay.nanoseconds
    }

    /// Runs and forgets the after-send actions.
    func runAfterSend() {
        let actions = afterSend
        afterSend = []
        for action in actions { action() }
    }
}

extension Duration {
    /// Whole nanoseconds, at least zero.
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
    }
}
