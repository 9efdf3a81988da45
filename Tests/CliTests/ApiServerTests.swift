import ActorVmm
@testable import Cli
import EpollLoop
import Glibc
import Testing

/// The API over a real unix socket, without KVM: endpoints, status codes, JSON shapes, and every kind of
/// bad input a client can send.
@Suite struct ApiServerTests {
    static let config = #"{"payload": {"kernel": "/k", "cmdline": "tests=pio"}, "memory": {"size": 67108864}}"#

    @Test func pingAndNoVm() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let ping = try api.request("GET", "vmm.ping")
        #expect(ping.status == 200)
        #expect(ping.header("content-type") == "application/json")
        #expect(ping.json?["version"] == .string(versionNumber))
        #expect(ping.json?["pid"] == .int(getpid()))
        let info = try api.request("GET", "vm.info")
        #expect(info.status == 404)
        #expect(info.json == .array([.string("no VM information"), .string("no VM has been created")]))
    }

    @Test func lifecycleThroughTheApi() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        #expect(try api.request("PUT", "vm.create", body: Self.config).status == 204)
        let created = try api.request("GET", "vm.info").json
        #expect(created?["state"] == .string("Created"))
        #expect(created?["config"]?["memory"]?["size"] == .int(64 << 20))
        #expect(created?["config"]?["payload"]?["cmdline"] == .string("tests=pio"))
        #expect(created?["memory_actual_size"] == .int(64 << 20))
        #expect(try api.request("PUT", "vm.boot").status == 204)
        #expect(try api.request("PUT", "vm.pause").status == 204)
        #expect(try api.request("GET", "vm.info").json?["state"] == .string("Paused"))
        #expect(try api.request("PUT", "vm.resume").status == 204)
        let running = try api.request("GET", "vm.info").json
        #expect(running?["state"] == .string("Running"))
        #expect(running?["device_tree"]?["fake"]?["id"] == .string("fake"))
        let counters = try api.request("GET", "vm.counters")
        #expect(counters.status == 200 && counters.json?["fake"]?["requests"] == .int(1))
        #expect(try api.request("PUT", "vm.power-button").status == 204)
        #expect(try api.request("PUT", "vm.reboot").status == 204)
        #expect(try api.request("PUT", "vm.shutdown").status == 204)
        #expect(try api.request("GET", "vm.info").json?["state"] == .string("Shutdown"))
        #expect(try api.request("PUT", "vm.delete").status == 204)
        #expect(try api.request("GET", "vm.info").status == 404)
        #expect(api.backend.events == ["prepare", "boot", "pause", "resume", "power-button", "shutdown", "prepare", "boot", "shutdown"])
        #expect(api.backend.offLoopCalls.load(ordering: .relaxed) == 0, "all VM work ran on the controller's loop, none on the API's")
    }

    /// Illegal transitions are 4xx with Cloud Hypervisor's error body; nothing changes.
    @Test func illegalTransitions() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let noVm = try api.request("PUT", "vm.boot")
        #expect(noVm.status == 404)
        #expect(noVm.json == .array([.string("cannot boot the VM"), .string("no VM has been created (use vm.create first)")]))
        _ = try api.request("PUT", "vm.create", body: Self.config)
        let notBooted = try api.request("PUT", "vm.pause")
        #expect(notBooted.status == 405)
        #expect(notBooted.json == .array([.string("cannot pause the VM"), .string("the VM is not booted (state: Created)")]))
        #expect(try api.request("PUT", "vm.resume").status == 405)
        #expect(try api.request("PUT", "vm.shutdown").status == 405)
        #expect(try api.request("GET", "vm.counters").status == 405)
        #expect(try api.request("PUT", "vm.create", body: Self.config).status == 409)
        #expect(try api.request("GET", "vm.info").json?["state"] == .string("Created"))
    }

    @Test func vmmShutdownExitsAfterAnswering() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        _ = try api.request("PUT", "vm.create", body: Self.config)
        _ = try api.request("PUT", "vm.boot")
        let response = try api.request("PUT", "vmm.shutdown")
        #expect(response.status == 204)
        #expect(await eventuallyAsync { api.exitLatch.stopReason == .stopRequested("vmm.shutdown request") })
        #expect(api.backend.events.last == "shutdown", "the VM was stopped before the VMM exits")
    }

    /// Every bad request: the right status, a JSON error body, and the server carries on.
    @Test(arguments: [
        ("GET /api/v1/vm.nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown endpoint /api/v1/vm.nothing"),
        ("GET /api/v2/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown endpoint"),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown endpoint"),
        ("GET /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\n\r\n", 405, "vm.boot takes PUT, not GET"),
        ("PUT /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n", 405, "vmm.ping takes GET, not PUT"),
        ("DELETE /api/v1/vm.info HTTP/1.1\r\nHost: x\r\n\r\n", 405, "vm.info takes GET, not DELETE"),
        ("PUT /api/v1/vm.resize-zone HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 501, "vm.resize-zone is not implemented by actor-vmm"),
        ("PUT /api/v1/vm.resize HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400, "give desired_vcpus or desired_ram"),
        ("PUT /api/v1/vm.resize HTTP/1.1\r\nHost: x\r\nContent-Length: 22\r\n\r\n{\"desired_vcpus\": 300}", 400, "desired_vcpus: expected an integer from 1 to 255"),
        ("PUT /api/v1/vm.resize HTTP/1.1\r\nHost: x\r\nContent-Length: 22\r\n\r\n{\"desired_balloon\": 1}", 400, "desired_balloon"),
        ("PUT /api/v1/vm.resize HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"desired_vcpus\": 2}", 404, "no VM has been created"),
        ("PUT /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400, "vm.boot takes no request body"),
        ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\n\r\n", 400, "vm.create needs a VmConfig JSON body"),
        ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"payload", 400, "invalid JSON at byte 1: unterminated string"),
        ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"payload\": {}}", 400, "payload.kernel: missing"),
        ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 75\r\n\r\n{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": 1000, \"max_vcpus\": 1}}",
         400, "cpus.boot_vcpus: expected an integer from 1 to 254"),
        ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", 413, "request body larger than 65536 bytes"),
        ("garbage\r\n\r\n", 400, "malformed request line"),
        ("GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n", 400, "missing Host header"),
        ("GET /api/v1/vmm.ping HTTP/3.0\r\nHost: x\r\n\r\n", 505, "only HTTP/1.1"),
        ("GET /api/v1/" + String(repeating: "x", count: 9000) + " HTTP/1.1\r\n", 414, "request line longer than 8192 bytes"),
        ("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "y", count: 17000) + "\r\n\r\n", 431, "request head larger than 16384 bytes"),
        ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "Transfer-Encoding is not supported"),
    ])
    func badRequests(request: String, status: Int, fragment: String) async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let reply = try api.exchange(request)
        #expect(reply.hasPrefix("HTTP/1.1 \(status) "), "\(reply.prefix(200))")
        #expect(reply.contains("Content-Type: application/json"), "\(reply.prefix(300))")
        #expect(reply.contains(fragment), "\(reply.prefix(300))")
        if status == 405 { #expect(reply.contains("Allow: ")) }
        #expect(try api.request("GET", "vmm.ping").status == 200, "the server carries on")
        #expect(try api.request("GET", "vm.info").status == 404, "nothing was created")
    }

    /// HEAD is GET without the body: a GET endpoint answers with its status, headers and Content-Length, and
    /// no body; so does an error (HEAD of a PUT endpoint: 405). The next response on the connection is intact.
    @Test func headAnswersCarryNoBody() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let get = try api.exchange("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let getBody = get.components(separatedBy: "\r\n\r\n").last ?? ""
        let fd = try api.connect()
        defer { close(fd) }
        sendAll(fd, Array("HEAD /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\nHEAD /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/vm.info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        let replies = String(decoding: readToEnd(fd), as: UTF8.self)
        let parts = replies.components(separatedBy: "HTTP/1.1 ")
        #expect(parts.count == 4, "three answers: \(replies)")
        guard parts.count == 4 else { return }
        #expect(parts[1].hasPrefix("200 OK") && parts[1].contains("Content-Length: \(getBody.utf8.count)\r\n"), "\(parts[1])")
        #expect(parts[1].hasSuffix("\r\n\r\n"), "no body: \(parts[1])")
        #expect(parts[2].hasPrefix("405") && parts[2].hasSuffix("\r\n\r\n"), "no body: \(parts[2])")
        #expect(parts[3].hasPrefix("404") && parts[3].hasSuffix("\"]"), "the next answer is whole: \(parts[3])")
        let allow = try api.exchange("DELETE /api/v1/vm.info HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(allow.contains("Allow: GET, HEAD\r\n"), "\(allow)")
    }

    /// An absolute-form target (RFC 9112 §3.2.2) reaches the same endpoint.
    @Test func absoluteFormTargetsAreAccepted() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let reply = try api.exchange("GET http://localhost/api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        #expect(reply.hasPrefix("HTTP/1.1 200 OK") && reply.contains("\"build_version\""), "\(reply)")
    }

    /// Malformed framing closes the connection after the error; a request-level error keeps it.
    @Test func errorsAndTheConnection() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let fd = try api.connect()
        defer { close(fd) }
        sendAll(fd, Array("GET /api/v1/nope HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(readUntil(fd, "\"]").hasPrefix("HTTP/1.1 404"))
        sendAll(fd, Array("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(readUntil(fd, "}").hasPrefix("HTTP/1.1 200"), "a 404 keeps the connection open")
        sendAll(fd, Array("BAD\r\n\r\n".utf8))
        let reply = String(decoding: readToEnd(fd), as: UTF8.self)
        #expect(reply.hasPrefix("HTTP/1.1 400") && reply.contains("Connection: close"), "and a 400 closes it: \(reply)")
    }

    @Test func keepAliveAndPipelining() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let ping = "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n"
        let create = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: \(Self.config.utf8.count)\r\n\r\n\(Self.config)"
        let info = "GET /api/v1/vm.info HTTP/1.1\r\nHost: x\r\n\r\n"
        let reply = try api.exchange(ping + create + info + ping)  // all in one write, then half-close
        let statuses = reply.split(separator: "HTTP/1.1 ").map { $0.prefix(3) }
        #expect(statuses == ["200", "204", "200", "200"], "\(reply)")
        #expect(reply.contains("\"state\":\"Created\""), "the pipelined info saw the pipelined create")
    }

    @Test func expectContinue() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        let fd = try api.connect()
        defer { close(fd) }
        sendAll(fd, Array("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: \(Self.config.utf8.count)\r\n\r\n".utf8))
        #expect(readUntil(fd, "\r\n\r\n") == "HTTP/1.1 100 Continue\r\n\r\n")
        sendAll(fd, Array(Self.config.utf8))
        #expect(readUntil(fd, "\r\n\r\n").hasPrefix("HTTP/1.1 204 No Content"))
    }

    /// A client that goes away in the middle of a request leaves nothing behind.
    @Test func disconnectMidRequest() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        for cut in [10, 40, 80] {
            let fd = try api.connect()
            let request = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: \(Self.config.utf8.count)\r\n\r\n\(Self.config)"
            sendAll(fd, Array(request.utf8.prefix(cut)))
            close(fd)
        }
        #expect(try api.request("GET", "vm.info").status == 404, "no half-sent vm.create took effect")
        #expect(await eventuallyAsync { await api.server.connectionCount == 0 }, "their connections are gone")
    }

    /// One connection never blocks another: neither a client that stalls mid-request nor a slow operation.
    @Test func slowClientsAndSlowOperationsBlockNobody() async throws {
        let api = try await ApiFixture.start(slowBoot: .milliseconds(800))
        defer { Task { await api.stop() } }
        let staller = try api.connect()
        defer { close(staller) }
        sendAll(staller, Array("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Len".utf8))
        #expect(try api.request("GET", "vmm.ping").status == 200)

        _ = try api.request("PUT", "vm.create", body: #"{"payload": {"kernel": "/slow"}}"#)
        let booter = try api.connect(timeout: 10)
        defer { close(booter) }
        sendAll(booter, Array("PUT /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let start = monotonicNanoseconds()
        #expect(try api.request("GET", "vmm.ping").status == 200)
        #expect(try api.request("GET", "vm.info").json?["state"] == .string("Created"), "info does not wait for the boot")
        #expect(monotonicNanoseconds() - start < 500_000_000, "answered while the boot is still going")
        #expect(readUntil(booter, "\r\n\r\n").hasPrefix("HTTP/1.1 204"))
        #expect(try api.request("GET", "vm.info").json?["state"] == .string("Running"))
    }

    @Test func slowRequestsTimeOut() async throws {
        var config = HttpServerConfig()
        config.requestTimeout = .milliseconds(200)
        let api = try await ApiFixture.start(config)
        defer { Task { await api.stop() } }
        let fd = try api.connect()
        defer { close(fd) }
        sendAll(fd, Array("GET /api/v1/vmm.ping HTTP/1.1\r\nHo".utf8))
        let start = monotonicNanoseconds()
        let reply = String(decoding: readToEnd(fd), as: UTF8.self)
        #expect(reply.hasPrefix("HTTP/1.1 408 Request Timeout"), "\(reply)")
        #expect(monotonicNanoseconds() - start < 2_000_000_000)
        #expect(try api.request("GET", "vmm.ping").status == 200)
    }

    @Test func idleConnectionsAreClosed() async throws {
        var config = HttpServerConfig()
        config.idleTimeout = .milliseconds(200)
        let api = try await ApiFixture.start(config)
        defer { Task { await api.stop() } }
        let fd = try api.connect()
        defer { close(fd) }
        sendAll(fd, Array("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(readUntil(fd, "}").hasPrefix("HTTP/1.1 200"))
        #expect(readToEnd(fd).isEmpty, "closed without a word once idle")
        #expect(await eventuallyAsync { await api.server.connectionCount == 0 })
    }

    @Test func connectionLimit() async throws {
        var config = HttpServerConfig()
        config.maxConnections = 2
        config.idleTimeout = .seconds(600)  // the two held connections must not be closed as idle on a slow host
        let api = try await ApiFixture.start(config)
        defer { Task { await api.stop() } }
        let first = try api.connect(), second = try api.connect()
        defer { close(first); close(second) }
        #expect(await eventuallyAsync { await api.server.connectionCount == 2 })
        let reply = try api.exchange("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(reply.hasPrefix("HTTP/1.1 503 Service Unavailable") && reply.contains("too many connections"), "\(reply)")
        close(first)
        #expect(await eventuallyAsync { await api.server.connectionCount < 2 })
        #expect(try api.request("GET", "vmm.ping").status == 200)
    }

    /// Random bytes on many connections: the server answers or closes each, and keeps serving.
    @Test func survivesGarbage() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        var generator = SystemRandomNumberGenerator()
        let seeds = ["GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n", "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"payload\":{\"kernel\""]
        for round in 0..<60 {
            var bytes = Array(seeds[round % 2].utf8)
            for _ in 0..<(1 + round % 5) { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            if round % 3 == 0 { bytes = (0..<Int.random(in: 1...300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) } }
            _ = try api.exchange(String(decoding: bytes, as: UTF8.self))
        }
        #expect(try api.request("GET", "vmm.ping").status == 200)
        #expect(await eventuallyAsync { await api.server.connectionCount == 0 })
    }

    /// `--api-socket fd=N`: an inherited listening unix socket is adopted and served; anything else is refused.
    @Test func adoptsAnInheritedListeningSocket() async throws {
        let path = "/tmp/actor-vmm-test-\(getpid())-adopt.sock"
        let bound = try UnixSocket.listen(path: path)
        let adopted = try UnixSocket.adopt(fd: bound.fd)
        #expect(adopted.path == nil, "an adopted socket's file is not ours to remove")
        let loop = try EventLoop(name: "test-adopt")
        let server = HttpServer(loop: loop, listener: adopted) { _ in .json(.ok, .object(["adopted": .bool(true)])) }
        try await server.start()
        let response = try HttpClient.send(socketPath: path, method: "GET", path: "/x", timeout: 10)
        #expect(response.status == 200 && response.json?["adopted"] == .bool(true))
        await server.stop()
        loop.shutdown()
        unlink(path)

        let unbound = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(unbound) }
        #expect(throws: SocketError("fd=\(unbound): the socket is not listening")) { try UnixSocket.adopt(fd: unbound) }
        let datagram = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(datagram) }
        #expect(throws: SocketError("fd=\(datagram): not a stream socket")) { try UnixSocket.adopt(fd: datagram) }
        let inet = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(inet) }
        #expect(throws: SocketError("fd=\(inet): not a unix-domain socket")) { try UnixSocket.adopt(fd: inet) }
    }

    @Test func clientParsesResponses() throws {
        let ok = try HttpClient.parse(Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".utf8), complete: false)
        #expect(ok == HttpClient.Response(status: 200, reason: "OK", headers: [HttpHeader(name: "content-length", value: "2")], body: Array("{}".utf8)))
        #expect(try HttpClient.parse(Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}".utf8), complete: false) == nil)
        #expect(try HttpClient.parse(Array("HTTP/1.1 204 No Content\r\n\r\n".utf8), complete: false)?.status == 204)
        #expect(throws: SocketError.self) { try HttpClient.parse(Array("SSH-2.0\r\n\r\n".utf8), complete: true) }
        #expect(RemoteCommand.describeError(Array(#"["cannot pause the VM","the VM is not booted"]"#.utf8)) == "cannot pause the VM: the VM is not booted")
        #expect(RemoteCommand.describeError(Array("plain text".utf8)) == "plain text")
    }
}
