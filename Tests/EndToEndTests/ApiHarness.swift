import Foundation
import Glibc
import Synchronization

/// A running `actor-vmm` with `--api-socket`, its output in files, and clients for its socket: a raw HTTP
/// one (to send exactly what a test wants) and the `actor-vmm-remote` binary.
final class VmmProcess {
    let socketPath: String
    let process = Process()
    let stdoutPath: String
    let stderrPath: String
    private static let counter = Mutex(0)

    /// Starts `actor-vmm --api-socket path=<temp> <extra>` and waits until the socket answers.
    init(_ extra: [String] = [], socketPath: String? = nil) throws {
        let number = Self.counter.withLock { value -> Int in
            value += 1
            return value
        }
        let base = "/tmp/actor-vmm-e2e-\(getpid())-\(number)"
        self.socketPath = socketPath ?? base + ".sock"
        stdoutPath = base + ".out"
        stderrPath = base + ".err"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Harness.vmmPath)
        process.arguments = ["--api-socket", "path=\(self.socketPath)"] + extra
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while (try? request("GET", "vmm.ping"))?.status != 200 {
            guard process.isRunning, Date() < deadline else {
                throw VmmProcessError("actor-vmm did not start serving: \(stderr)")
            }
            usleep(20_000)
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        for path in [stdoutPath, stderrPath] { unlink(path) }
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits for the process to exit; nil if it is still running after `timeout` seconds.
    func waitForExit(timeout: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { return nil }
            usleep(10_000)
        }
        return process.terminationStatus
    }

    struct Response {
        let status: Int
        let head: String
        let body: String
        var json: Any? { try? JSONSerialization.jsonObject(with: Data(body.utf8), options: [.fragmentsAllowed]) }
        var object: [String: Any] { json as? [String: Any] ?? [:] }
    }

    /// One request over a fresh connection (`Connection: close`).
    func request(_ method: String, _ endpoint: String, body: String? = nil) throws -> Response {
        var text = "\(method) /api/v1/\(endpoint) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if let body { text += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        return try raw(text + "\r\n" + (body ?? ""))
    }

    /// Sends `text` as it is, half-closes, and parses what comes back.
    func raw(_ text: String) throws -> Response {
        let reply = try exchange(Array(text.utf8))
        guard let split = reply.range(of: "\r\n\r\n") else { throw VmmProcessError("no HTTP answer: \(reply)") }
        let head = String(reply[..<split.lowerBound])
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? -1
        return Response(status: status, head: head, body: String(reply[split.upperBound...]))
    }

    func exchange(_ bytes: [UInt8], halfClose: Bool = true) throws -> String {
        let fd = try connect()
        defer { close(fd) }
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { break }
            sent += n
        }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            out.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A connected socket (5 s receive timeout).
    func connect() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in socketPath.utf8.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw VmmProcessError("cannot connect to \(socketPath): errno \(errno)")
        }
        var limit = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Runs `actor-vmm-remote --api-socket <socket> <arguments>`.
    func remote(_ arguments: [String], stdin: String? = nil) -> Harness.Result {
        Harness.run(Harness.remotePath, ["--api-socket", socketPath] + arguments, timeout: 60, stdin: stdin)
    }

    /// Open descriptors of the VMM process, by what they point to, without sockets (the test's own API
    /// connections come and go; the ones that matter are KVM's, eventfds, epoll instances and files).
    func openDescriptors() -> [String] {
        let directory = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + $0) }
            .filter { !$0.hasPrefix("socket:") }.sorted()
    }

    /// The VMM's thread names.
    func threadNames() -> [String] { Harness.threadNames(pid) }
}

struct VmmProcessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension Harness {
    /// `actor-vmm-remote`, built beside `actor-vmm`.
    static var remotePath: String { URL(fileURLWithPath: vmmPath).deletingLastPathComponent().appendingPathComponent("actor-vmm-remote").path }

    /// A VmConfig JSON document for `kernel`.
    static func vmConfig(kernel: String, cmdline: String = "", memory: Int = 64 << 20, serialFile: String? = nil,
                         extra: String = "") -> String {
        let serial = serialFile.map { #""serial": {"mode": "File", "file": "\#($0)"}"# } ?? #""serial": {"mode": "Null"}"#
        return #"{"payload": {"kernel": "\#(kernel)", "cmdline": "\#(cmdline)"}, "cpus": {"boot_vcpus": 1, "max_vcpus": 1}, "memory": {"size": \#(memory)}, \#(serial)\#(extra)}"#
    }

    /// The names of process `pid`'s threads (vCPU threads are `vcpuN`), sorted.
    static func threadNames(_ pid: Int32) -> [String] {
        let directory = "/proc/\(pid)/task"
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return tasks.compactMap { try? String(contentsOfFile: "\(directory)/\($0)/comm", encoding: .utf8) }
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.sorted()
    }

    /// Polls `condition` for up to `seconds`.
    static func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline { return false }
            usleep(20_000)
        }
        return true
    }
}
