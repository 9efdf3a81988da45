import EpollLoop
import Glibc

/// A blocking HTTP/1.1 client over a unix socket: one request per connection (`Connection: close`), for
/// `actor-vmm-remote`.
enum HttpClient {
    struct Response: Equatable {
        let status: Int
        let reason: String
        let headers: [HttpHeader]
        let body: [UInt8]
    }

    /// Largest response accepted (vm.info and vm.counters are a few KiB).
    static let maxResponse = 16 << 20

    /// Sends `method path` with `body` (as JSON) to the server at `socketPath` and reads the answer, waiting
    /// at most `timeout` seconds for each read.
    static func send(socketPath: String, method: String, path: String, body: [UInt8]? = nil,
                     timeout: Int = 300) throws(SocketError) -> Response {
        let fd = try UnixSocket.connect(path: socketPath)
        defer { close(fd) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))

        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let request = Array((head + "\r\n").utf8) + (body ?? [])
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw SocketError("cannot send the request: \(Errno(errno))") }
            sent += n
        }

        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while received.count <= maxResponse {
            if let response = try parse(received, complete: false) { return response }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { throw SocketError("no answer within \(timeout) seconds") }
            guard n >= 0 else { throw SocketError("cannot read the answer: \(Errno(errno))") }
            if n == 0 {
                guard let response = try parse(received, complete: true) else {
                    throw SocketError(received.isEmpty ? "the server closed the connection without answering" : "the answer was cut short")
                }
                return response
            }
            received += buffer[0..<n]
        }
        throw SocketError("the answer is larger than \(maxResponse) bytes")
    }

    /// A whole response at the start of `bytes`, or nil if more is needed. With `complete` (the server has
    /// closed), a response without Content-Length ends at the end of `bytes`.
    static func parse(_ bytes: [UInt8], complete: Bool) throws(SocketError) -> Response? {
        let crlf2: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A]
        guard bytes.count >= 4, let headEnd = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<($0 + 4)]) == crlf2 }) else {
            return nil
        }
        let lines = String(decoding: bytes[0..<headEnd], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines[0].split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw SocketError("malformed answer: \(lines[0])")
        }
        let headers = lines.dropFirst().compactMap { line -> HttpHeader? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return HttpHeader(name: line[..<colon].lowercased(), value: String(line[line.index(after: colon)...].trimmingSpaces()))
        }
        if status < 200 {  // an interim answer (100 Continue): the real one follows
            return try parse(Array(bytes[(headEnd + 4)...]), complete: complete)
        }
        let bodyStart = headEnd + 4
        if let lengthText = headers.first(where: { $0.name == "content-length" })?.value {
            guard let length = Int(lengthText), length >= 0 else { throw SocketError("malformed Content-Length: \(lengthText)") }
            guard bytes.count - bodyStart >= length else { return nil }
            return Response(status: status, reason: statusParts.count > 2 ? String(statusParts[2]) : "", headers: headers,
                            body: Array(bytes[bodyStart..<(bodyStart + length)]))
        }
        guard complete || status == 204 || status == 304 else { return nil }
        return Response(status: status, reason: statusParts.count > 2 ? String(statusParts[2]) : "", headers: headers,
                        body: status == 204 || status == 304 ? [] : Array(bytes[bodyStart...]))
    }
}
