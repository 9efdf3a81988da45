import ActorVmm
import EpollLoop
import Glibc

/// Answers one request. Runs outside the server's loop, so a slow answer (booting a VM) holds up only the
/// connection that asked.
typealias HttpHandler = @Sendable (HttpRequest) async -> HttpResponse

/// An HTTP/1.1 server on a unix socket, as an actor whose executor is an ``EventLoop``.
///
/// Every socket is non-blocking and watched by the loop; the listener's and the connections' readiness
/// handlers run inside the actor on the loop thread (``LoopBound``), so connection state is plain actor
/// state. Nothing here blocks: a connection that stalls (a slow or silent client, a full socket buffer)
/// waits in epoll, and a request being handled waits in its own `Task`, so one connection never holds up
/// another, and nothing here ever touches a vCPU.
///
/// Per connection: requests are parsed by ``HttpRequestParser`` within ``HttpLimits``; they are answered
/// in order (pipelined requests wait in the buffer, and reading stops once a maximal request is buffered);
/// keep-alive follows the request; deadlines cut off slow requests (408), idle connections and clients
/// that do not read their responses (see ``HttpServerConfig``). A client that disconnects mid-request
/// leaves no trace: an incomplete request is never handed to the handler.
actor HttpServer: LoopBound {
    nonisolated let loop: EventLoop

    let listener: UnixSocket.Listener
    let config: HttpServerConfig
    let handler: HttpHandler
    private var listenerRegistration: Registration?
    private var connections: [UInt64: HttpConnection] = [:]
    private var nextID: UInt64 = 1
    private var sweepScheduled = false
    private var stopped = false
    private var readBuffer = [UInt8](repeating: 0, count: 16 * 1024)

    init(loop: EventLoop, listener: UnixSocket.Listener, config: HttpServerConfig = HttpServerConfig(),
         handler: @escaping HttpHandler) {
        self.loop = loop
        self.listener = listener
        self.config = config
        self.handler = handler
    }

    /// Starts accepting connections.
    func start() throws(Errno) {
        listenerRegistration = try register(fd: listener.fd) { server, _ in server.acceptConnections() }
    }

    /// Stops accepting, closes every connection (running their after-send actions) and the listener, and
    /// removes the socket file if we created it. Requests being handled finish, but their answers are dropped.
    func stop() {
        guard !stopped else { return }
        stopped = true
        if let registration = listenerRegistration { loop.deregister(registration) }
        listenerRegistration = nil
        UnixSocket.close(listener)
        for connection in connections.values { close(connection) }
    }

    /// Number of open connections (for tests).
    var connectionCount: Int { connections.count }

    // MARK: - Accepting

    private func acceptConnections() {
        while !stopped {
            let fd = accept(listener.fd, nil, nil)
            if fd < 0 {
                switch errno {
                case EINTR, ECONNABORTED: continue
                case EAGAIN: return
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors: stop watching the listener for a moment instead of spinning on it.
                    Log.warning("api: cannot accept a connection: \(Errno(errno)); retrying in 100 ms")
                    pauseAccepting()
                    return
                default:
                    Log.warning("api: accept failed: \(Errno(errno))")
                    return
                }
            }
            UnixSocket.setNonBlocking(fd)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            guard connections.count < config.maxConnections else {
                let response = HttpResponse.json(.serviceUnavailable, .array([.string("too many connections (at most \(config.maxConnections))")]))
                let bytes = response.serialized(keepAlive: false)
                _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                Glibc.close(fd)
                continue
            }
            let connection = HttpConnection(id: nextID, fd: fd, limits: config.limits)
            nextID += 1
            connections[connection.id] = connection
            connection.setDeadline(.request, after: config.requestTimeout)
            updateInterest(connection)
            scheduleSweep()
        }
    }

    private func pauseAccepting() {
        if let registration = listenerRegistration { loop.deregister(registration) }
        listenerRegistration = nil
        schedule(after: .milliseconds(100)) { server in
            guard !server.stopped else { return }
            do {
                try server.start()
                server.acceptConnections()
            } catch {
                Log.error("api: cannot watch the listening socket again: \(error); the API no longer accepts connections")
            }
        }
    }

    // MARK: - Reading and parsing

    private func handleEvents(_ id: UInt64, _ events: IOEvents) {
        guard let connection = connections[id] else { return }
        if !events.isDisjoint(with: [.readable, .hangup, .error]) && connection.interest.contains(.readable) {
            readAvailable(connection)
        }
        if connections[id] != nil && events.contains(.writable) { flush(connection) }
    }

    private func readAvailable(_ connection: HttpConnection) {
        while connection.input.count < config.maxBuffered {
            let wanted = min(readBuffer.count, config.maxBuffered - connection.input.count)
            let n = readBuffer.withUnsafeMutableBytes { read(connection.fd, $0.baseAddress, wanted) }
            if n > 0 {
                connection.input += readBuffer[0..<n]
            } else if n == 0 {
                connection.peerClosed = true
                break
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN {
                break
            } else {
                close(connection)  // ECONNRESET and friends: the client is gone
                return
            }
        }
        if connection.phase == .reading {
            process(connection)
        } else {
            updateInterest(connection)
        }
    }

    /// Parses buffered bytes while the connection is reading: hands a whole request to the handler, answers
    /// a bad one, or waits for more.
    private func process(_ connection: HttpConnection) {
        guard connection.phase == .reading else { return }
        if connection.input.isEmpty {
            if connection.peerClosed { close(connection); return }
            connection.setDeadline(.idle, after: config.idleTimeout)
            updateInterest(connection)
            return
        }
        connection.setDeadline(.request, after: config.requestTimeout)
        switch connection.parser.parse(connection.input) {
        case .incomplete(let expectsContinue):
            if connection.peerClosed { close(connection); return }  // gone mid-request: nothing happened
            if expectsContinue && !connection.continueSent {
                connection.continueSent = true
                connection.output += Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
                flush(connection)
            } else {
                updateInterest(connection)
            }
        case .failure(let failure):
            Log.debug("api: refused a request: \(failure.status) \(failure.message)")
            connection.input.removeAll()
            respond(connection, .json(failure.status, .array([.string(failure.message)])), keepAlive: false)
        case .request(let request, let consumed):
            connection.input.removeFirst(consumed)
            connection.continueSent = false
            connection.phase = .handling
            connection.setDeadline(.none, after: .zero)
            updateInterest(connection)
            let id = connection.id
            let handler = self.handler
            // On this loop (a TaskExecutor), not the shared cooperative pool; awaits inside the handler hop
            // to the actors they call (the lifecycle controller has a loop of its own).
            Task(executorPreference: loop) { [self] in
                let response = await handler(request)
                await finish(id, request: request, response: response)
            }
        }
    }

    // MARK: - Writing

    private func finish(_ id: UInt64, request: HttpRequest, response: HttpResponse) {
        Log.debug("api: \(request.method) \(request.target) → \(response.status)")
        guard let connection = connections[id] else {
            response.afterSend?()  // the client went away; the action still happened
            return
        }
        // A client that half-closed still gets an answer to every complete request it sent; the connection
        // closes once nothing complete is left (see `process`).
        respond(connection, response, keepAlive: request.keepAlive && !response.closeConnection, headRequest: request.method == "HEAD")
    }

    private func respond(_ connection: HttpConnection, _ response: HttpResponse, keepAlive: Bool, headRequest: Bool = false) {
        connection.output += response.serialized(keepAlive: keepAlive, headRequest: headRequest)
        if let action = response.afterSend { connection.afterSend.append(action) }
        connection.closeAfterWrite = !keepAlive
        connection.phase = .writing
        connection.setDeadline(.write, after: config.writeTimeout)
        flush(connection)
    }

    /// Writes what it can; when a response is complete, runs its after-send actions and either closes or
    /// goes back to reading (and to any pipelined request already buffered).
    private func flush(_ connection: HttpConnection) {
        while connection.hasPendingOutput {
            let n = connection.output.withUnsafeBytes { bytes in
                send(connection.fd, bytes.baseAddress! + connection.outputOffset,
                     bytes.count - connection.outputOffset, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                connection.outputOffset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && errno == EAGAIN {
                updateInterest(connection)
                return
            } else {
                close(connection)
                return
            }
        }
        connection.output.removeAll(keepingCapacity: true)
        connection.outputOffset = 0
        guard connection.phase == .writing else {  // an interim 100 Continue went out
            updateInterest(connection)
            return
        }
        connection.runAfterSend()
        if connection.closeAfterWrite { close(connection); return }
        connection.phase = .reading
        process(connection)
    }

    // MARK: - Bookkeeping

    /// Registers the connection for what it is waiting for: input while reading (or buffering the next
    /// request while one is handled) and not yet at the buffer limit or EOF; output while any is pending.
    /// With nothing to wait for it is not registered at all, so a closed peer cannot make epoll spin.
    private func updateInterest(_ connection: HttpConnection) {
        var wanted: IOEvents = []
        if connection.phase != .writing && !connection.peerClosed && connection.input.count < config.maxBuffered {
            wanted.insert(.readable)
        }
        if connection.hasPendingOutput { wanted.insert(.writable) }
        guard wanted != connection.interest else { return }
        if let registration = connection.registration { loop.deregister(registration) }
        connection.registration = nil
        connection.interest = wanted
        guard !wanted.isEmpty else { return }
        let id = connection.id
        do {
            connection.registration = try register(fd: connection.fd, events: wanted) { server, events in
                server.handleEvents(id, events)
            }
        } catch {
            Log.warning("api: cannot watch a connection: \(error)")
            close(connection)
        }
    }

    private func close(_ connection: HttpConnection) {
        guard connections.removeValue(forKey: connection.id) != nil else { return }
        if let registration = connection.registration { loop.deregister(registration) }
        connection.registration = nil
        Glibc.close(connection.fd)
        connection.runAfterSend()
    }

    /// Checks deadlines periodically while any connection is open.
    private func scheduleSweep() {
        guard !sweepScheduled, !connections.isEmpty, !stopped else { return }
        sweepScheduled = true
        schedule(after: config.sweepInterval) { server in
            server.sweepScheduled = false
            server.expireDeadlines()
            server.scheduleSweep()
        }
    }

    private func expireDeadlines() {
        let now = monotonicNanoseconds()
        for connection in connections.values where connection.deadlineKind != .none && connection.deadline <= now {
            switch connection.deadlineKind {
            case .request where connection.phase == .reading:
                Log.debug("api: request not complete within \(config.requestTimeout); disconnecting")
                connection.input.removeAll()
                respond(connection, .json(.requestTimeout, .array([.string("request not complete within \(config.requestTimeout)")])),
                        keepAlive: false)
            default:
                close(connection)  // idle, or not taking its response
            }
        }
    }
}
