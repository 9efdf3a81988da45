import ActorVmm
@testable import Cli
import EpollLoop
import Glibc
import Synchronization

/// A real ``HttpServer`` on a unix socket in /tmp, with the real router and lifecycle controller over a
/// ``FakeBackend``: the whole API without /dev/kvm.
struct ApiFixture {
    let apiLoop: EventLoop
    let vmmLoop: EventLoop
    let backend: FakeBackend
    let exitLatch = StopLatch()
    let controller: VmmController
    let server: HttpServer
    let path: String

    private static let counter = Atomic<Int>(0)

    static func start(_ config: HttpServerConfig = HttpServerConfig(), slowBoot: Duration = .milliseconds(300)) async throws -> ApiFixture {
        let path = "/tmp/actor-vmm-test-\(getpid())-\(counter.add(1, ordering: .relaxed).newValue).sock"
        let fixture = try ApiFixture(path: path, config: config, slowBoot: slowBoot)
        try await fixture.server.start()
        return fixture
    }

    private init(path: String, config: HttpServerConfig, slowBoot: Duration) throws {
        self.path = path
        apiLoop = try EventLoop(name: "test-api")
        vmmLoop = try EventLoop(name: "test-vmm")
        backend = FakeBackend(slowBoot: slowBoot)
        backend.controllerLoop.withLock { [vmmLoop] in $0 = vmmLoop }
        controller = VmmController(loop: vmmLoop, backend: backend, exitLatch: exitLatch)
        let router = ApiRouter(controller: controller, exitLatch: exitLatch)
        server = HttpServer(loop: apiLoop, listener: try UnixSocket.listen(path: path), config: config) { await router.handle($0) }
    }

    func stop() async {
        await server.stop()
        apiLoop.shutdown()
        vmmLoop.shutdown()
    }

    /// One request with `HttpClient` (what actor-vmm-remote uses).
    func request(_ method: String, _ endpoint: String, body: String? = nil) throws -> HttpClient.Response {
        try HttpClient.send(socketPath: path, method: method, path: "/api/v1/" + endpoint, body: body.map { Array($0.utf8) }, timeout: 10)
    }

    /// A connected client socket with a receive timeout.
    func connect(timeout: Int = 5) throws -> Int32 {
        let fd = try UnixSocket.connect(path: path)
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends `text` on a new connection, half-closes it, and returns everything the server sends until it
    /// closes (or the timeout).
    func exchange(_ text: String, halfClose: Bool = true) throws -> String {
        let fd = try connect()
        defer { close(fd) }
        sendAll(fd, Array(text.utf8))
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        return String(decoding: readToEnd(fd), as: UTF8.self)
    }
}

func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
    var sent = 0
    while sent < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { return }
        sent += n
    }
}

/// Reads until the peer closes, an error, or the receive timeout.
func readToEnd(_ fd: Int32) -> [UInt8] {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return out }
        out += buffer[0..<n]
    }
}

/// Reads until `text` contains `marker` (or the peer closes / times out).
func readUntil(_ fd: Int32, _ marker: String) -> String {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while !String(decoding: out, as: UTF8.self).contains(marker) {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        out += buffer[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

extension HttpClient.Response {
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: JsonValue? { try? JsonParser.parse(body) }
    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}
