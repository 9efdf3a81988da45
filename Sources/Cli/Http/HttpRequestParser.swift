/// Size limits for one request. Anything beyond them is refused before it is buffered in full.
struct HttpLimits: Sendable, Equatable {
    /// The request line ("PUT /api/v1/vm.boot HTTP/1.1"), without its CRLF. Longer: 414.
    var maxRequestLine = 8 * 1024
    /// The whole head: request line, header lines and the blank line. Larger: 431.
    var maxHeaderBytes = 16 * 1024
    /// Header lines. More: 431.
    var maxHeaderCount = 64
    /// The body (`Content-Length`). Larger: 413, answered as soon as the head has arrived.
    var maxBodyBytes = 64 * 1024
}

/// Why a request was refused: the status to answer with and a one-line message for the body.
struct HttpParseFailure: Error, Equatable, Sendable {
    let status: HttpStatus
    let message: String
}

/// What ``HttpRequestParser/parse(_:)`` found at the start of the buffer.
enum HttpParseResult: Equatable {
    /// Not a whole request yet. `expectsContinue`: the head is complete, asked for `100 Continue` and the
    /// body has not arrived, so the server should send the interim response.
    case incomplete(expectsContinue: Bool)
    /// A whole request, which took the first `consumed` bytes of the buffer (pipelined requests follow).
    case request(HttpRequest, consumed: Int)
    /// The bytes cannot be a valid request (or break a limit); answer and close the connection.
    case failure(HttpParseFailure)
}

/// An incremental HTTP/1.1 request parser (RFC 9112), strict where laxness would be a risk.
///
/// Feed it the connection's buffered bytes, starting at the first byte of the request, each time more
/// arrive. It remembers how far it has scanned, so the head is searched once, and it fails as early as it
/// can: a bare CR or LF, a malformed request line, or a head or request line over its limit is refused
/// without waiting for the rest. Refused outright: obsolete line folding, whitespace before a header's
/// colon, control characters in header values, conflicting `Content-Length`s, a missing `Host` (HTTP/1.1),
/// any `Transfer-Encoding` (501: bodies need `Content-Length`), and unknown expectations (417).
struct HttpRequestParser {
    struct Head: Equatable {
        let method: String
        let target: String
        let minorVersion: Int
        let headers: [HttpHeader]
        let contentLength: Int
        let keepAlive: Bool
        let expectsContinue: Bool
        /// Bytes from the start of the buffer to the first body byte.
        let length: Int
    }

    let limits: HttpLimits
    private var head: Head?
    private var scanned = 0

    init(limits: HttpLimits = HttpLimits()) { self.limits = limits }

    private static let cr: UInt8 = 0x0D, lf: UInt8 = 0x0A, space: UInt8 = 0x20, tab: UInt8 = 0x09

    /// Looks for one request at the start of `buffer`.
    mutating func parse(_ buffer: [UInt8]) -> HttpParseResult {
        if head == nil {
            switch scanHead(buffer) {
            case .failure(let failure): return .failure(failure)
            case .success(nil): return .incomplete(expectsContinue: false)
            case .success(let parsed?): head = parsed
            }
        }
        guard let head else { return .incomplete(expectsContinue: false) }
        let total = head.length + head.contentLength
        guard buffer.count >= total else { return .incomplete(expectsContinue: head.expectsContinue) }
        let request = HttpRequest(method: head.method, target: head.target, minorVersion: head.minorVersion,
                                  headers: head.headers, body: Array(buffer[head.length..<total]),
                                  keepAlive: head.keepAlive)
        self = HttpRequestParser(limits: limits)
        return .request(request, consumed: total)
    }

    /// Finds the end of the head (CRLF CRLF) and parses it; nil while it has not arrived.
    private mutating func scanHead(_ buffer: [UInt8]) -> Result<Head?, HttpParseFailure> {
        var start = 0  // RFC 9112 §2.2: ignore empty lines before the request line
        while start + 1 < buffer.count, buffer[start] == Self.cr, buffer[start + 1] == Self.lf { start += 2 }
        // The CR of an empty line whose LF has not arrived yet: wait, as if it had come in one piece.
        if start == buffer.count - 1, buffer[start] == Self.cr { return .success(nil) }
        // Bare CRs are refused below, so the first CR ends the request line. Check the line as soon as it is
        // there: garbage and over-long lines are refused without waiting for the rest of the head.
        let firstLineEnd = buffer[start...].firstIndex(of: Self.cr)
        if (firstLineEnd ?? buffer.count) - start > limits.maxRequestLine {
            return .failure(.init(status: .uriTooLong, message: "request line longer than \(limits.maxRequestLine) bytes"))
        }
        if let firstLineEnd, case .failure(let failure) = Self.parseRequestLine(buffer[start..<firstLineEnd]) {
            return .failure(failure)
        }
        var index = max(scanned, start)
        while index < buffer.count {
            let byte = buffer[index]
            if byte == Self.lf {
                guard index > start, buffer[index - 1] == Self.cr else {
                    return .failure(.init(status: .badRequest, message: "bare LF in the request head (lines end with CRLF)"))
                }
                if index >= start + 3, buffer[index - 2] == Self.lf, buffer[index - 3] == Self.cr {
                    guard index + 1 - start <= limits.maxHeaderBytes else {
                        return .failure(.init(status: .headersTooLarge, message: "request head larger than \(limits.maxHeaderBytes) bytes"))
                    }
                    return Self.parseHead(buffer[start..<(index - 3)], length: index + 1, limits: limits).map { Optional($0) }
                }
            } else if byte == Self.cr, index + 1 < buffer.count, buffer[index + 1] != Self.lf {
                return .failure(.init(status: .badRequest, message: "bare CR in the request head"))
            }
            index += 1
        }
        if index - start > limits.maxHeaderBytes {
            return .failure(.init(status: .headersTooLarge, message: "request head larger than \(limits.maxHeaderBytes) bytes"))
        }
        scanned = buffer.last == Self.cr ? buffer.count - 1 : buffer.count
        return .success(nil)
    }

    /// The request line: `method SP target SP HTTP/1.x`, single spaces. The target is origin-form
    /// (`/api/v1/vm.info`) or absolute-form (`http://localhost/api/v1/vm.info`, RFC 9112 §3.2.2: a server must
    /// accept it), which is reduced to its origin form; the authority in it is not checked (the unix socket
    /// has no host name).
    static func parseRequestLine(_ line: ArraySlice<UInt8>) -> Result<(String, String, Int), HttpParseFailure> {
        let parts = line.split(separator: space, omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else {
            return .failure(.init(status: .badRequest, message: "malformed request line (expected METHOD /path HTTP/1.1)"))
        }
        guard parts[0].allSatisfy(isTokenByte) else {
            return .failure(.init(status: .badRequest, message: "invalid character in the request method"))
        }
        guard parts[1].allSatisfy({ (0x21...0x7E).contains($0) }), let target = originForm(parts[1]) else {
            return .failure(.init(status: .badRequest, message: "the request target must be a path such as /api/v1/vmm.ping or an absolute URI such as http://localhost/api/v1/vmm.ping"))
        }
        let version = Array(parts[2])
        let prefix = Array("HTTP/".utf8)
        guard version.count == 8, Array(version[0..<5]) == prefix, version[6] == UInt8(ascii: "."),
              let major = digit(version[5]), let minor = digit(version[7]) else {
            return .failure(.init(status: .badRequest, message: "malformed HTTP version"))
        }
        guard major == 1, minor <= 1 else {
            return .failure(.init(status: .versionNotSupported, message: "only HTTP/1.1 and HTTP/1.0 are supported"))
        }
        return .success((String(decoding: parts[0], as: UTF8.self), target, minor))
    }

    /// The origin form of a request target: itself when it starts with `/`; for an absolute `http` or `https`
    /// URI, its path and query (`/` when it has no path). Nil for anything else, and for an absolute URI with
    /// an empty authority or user information in it (RFC 9110 §4.2.4 forbids sending that).
    static func originForm(_ target: ArraySlice<UInt8>) -> String? {
        if target.first == UInt8(ascii: "/") { return String(decoding: target, as: UTF8.self) }
        let text = String(decoding: target, as: UTF8.self)
        let lowered = text.lowercased()
        guard let scheme = ["http://", "https://"].first(where: { lowered.hasPrefix($0) }) else { return nil }
        let rest = text.dropFirst(scheme.count)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        let path = rest[authorityEnd...]
        guard !path.hasPrefix("#") else { return "/" }
        return path.hasPrefix("/") ? String(path) : "/" + path
    }

    /// Parses the head (without its final CRLF CRLF) whose bytes end at `length`.
    static func parseHead(_ bytes: ArraySlice<UInt8>, length: Int, limits: HttpLimits) -> Result<Head, HttpParseFailure> {
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = bytes.startIndex
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if bytes[index] == cr {  // scanHead guaranteed every CR is followed by LF
                lines.append(bytes[lineStart..<index])
                index += 2
                lineStart = index
            } else {
                index += 1
            }
        }
        lines.append(bytes[lineStart..<bytes.endIndex])
        let requestLine: (method: String, target: String, minor: Int)
        switch parseRequestLine(lines[0]) {
        case .failure(let failure): return .failure(failure)
        case .success(let parsed): requestLine = parsed
        }
        guard lines.count - 1 <= limits.maxHeaderCount else {
            return .failure(.init(status: .headersTooLarge, message: "more than \(limits.maxHeaderCount) header fields"))
        }
        var headers: [HttpHeader] = []
        for line in lines.dropFirst() {
            switch parseHeaderLine(line) {
            case .failure(let failure): return .failure(failure)
            case .success(let header): headers.append(header)
            }
        }
        return interpret(headers, requestLine: requestLine, length: length, limits: limits)
    }

    /// `name: OWS value OWS`, with no whitespace before the colon and no control characters in the value.
    static func parseHeaderLine(_ line: ArraySlice<UInt8>) -> Result<HttpHeader, HttpParseFailure> {
        if let first = line.first, first == space || first == tab {
            return .failure(.init(status: .badRequest, message: "obsolete line folding in a header"))
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex,
              line[..<colon].allSatisfy(isTokenByte) else {
            return .failure(.init(status: .badRequest, message: "malformed header line (expected Name: value)"))
        }
        let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
        var value = line[(colon + 1)...]
        while let first = value.first, first == space || first == tab { value = value.dropFirst() }
        while let last = value.last, last == space || last == tab { value = value.dropLast() }
        guard value.allSatisfy({ $0 == tab || $0 >= 0x20 && $0 != 0x7F }) else {
            return .failure(.init(status: .badRequest, message: "control character in header \(name)"))
        }
        return .success(HttpHeader(name: name, value: String(decoding: value, as: UTF8.self)))
    }

    /// The headers that frame the message or change the connection: Host, Content-Length,
    /// Transfer-Encoding, Connection, Expect.
    static func interpret(_ headers: [HttpHeader], requestLine: (method: String, target: String, minor: Int),
                          length: Int, limits: HttpLimits) -> Result<Head, HttpParseFailure> {
        func values(_ name: String) -> [String] { headers.filter { $0.name == name }.map(\.value) }
        let hosts = values("host")
        if requestLine.minor == 1 && hosts.count != 1 {
            return .failure(.init(status: .badRequest, message: hosts.isEmpty ? "missing Host header (required by HTTP/1.1)" : "more than one Host header"))
        }
        if !values("transfer-encoding").isEmpty {
            return .failure(.init(status: .notImplemented, message: "Transfer-Encoding is not supported; send the body with Content-Length"))
        }
        var contentLength = 0
        let lengths = values("content-length")
        if let first = lengths.first {
            guard lengths.allSatisfy({ $0 == first }) else {
                return .failure(.init(status: .badRequest, message: "conflicting Content-Length headers"))
            }
            guard !first.isEmpty, first.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                return .failure(.init(status: .badRequest, message: "Content-Length is not a number"))
            }
            guard first.count <= 18, let value = Int(first), value <= limits.maxBodyBytes else {
                return .failure(.init(status: .contentTooLarge, message: "request body larger than \(limits.maxBodyBytes) bytes"))
            }
            contentLength = value
        }
        let connection = values("connection").flatMap { $0.lowercased().split(separator: ",") }
            .map { $0.trimmingSpaces() }
        let keepAlive = requestLine.minor == 1 ? !connection.contains("close") : connection.contains("keep-alive")
        var expectsContinue = false
        for expectation in values("expect") {
            guard expectation.lowercased() == "100-continue" else {
                return .failure(.init(status: .expectationFailed, message: "unsupported expectation \(expectation)"))
            }
            expectsContinue = requestLine.minor == 1 && contentLength > 0
        }
        return .success(Head(method: requestLine.method, target: requestLine.target, minorVersion: requestLine.minor,
                             headers: headers, contentLength: contentLength, keepAlive: keepAlive,
                             expectsContinue: expectsContinue, length: length))
    }

    /// RFC 9110 `tchar`: the characters of a method or header name.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }

    private static func digit(_ byte: UInt8) -> Int? {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? Int(byte - UInt8(ascii: "0")) : nil
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs.
    func trimmingSpaces() -> Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return text
    }
}
