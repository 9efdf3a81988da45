/// An HTTP status code with its reason phrase.
struct HttpStatus: Equatable, Sendable, CustomStringConvertible {
    let code: Int
    let reason: String

    static let ok = HttpStatus(code: 200, reason: "OK")
    static let noContent = HttpStatus(code: 204, reason: "No Content")
    static let badRequest = HttpStatus(code: 400, reason: "Bad Request")
    static let notFound = HttpStatus(code: 404, reason: "Not Found")
    static let methodNotAllowed = HttpStatus(code: 405, reason: "Method Not Allowed")
    static let requestTimeout = HttpStatus(code: 408, reason: "Request Timeout")
    static let conflict = HttpStatus(code: 409, reason: "Conflict")
    static let contentTooLarge = HttpStatus(code: 413, reason: "Content Too Large")
    static let uriTooLong = HttpStatus(code: 414, reason: "URI Too Long")
    static let expectationFailed = HttpStatus(code: 417, reason: "Expectation Failed")
    static let tooManyRequests = HttpStatus(code: 429, reason: "Too Many Requests")
    static let headersTooLarge = HttpStatus(code: 431, reason: "Request Header Fields Too Large")
    static let internalServerError = HttpStatus(code: 500, reason: "Internal Server Error")
    static let notImplemented = HttpStatus(code: 501, reason: "Not Implemented")
    static let serviceUnavailable = HttpStatus(code: 503, reason: "Service Unavailable")
    static let versionNotSupported = HttpStatus(code: 505, reason: "HTTP Version Not Supported")

    var description: String { "\(code) \(reason)" }
}

/// One header field. Names are stored lower-cased (they are case-insensitive).
struct HttpHeader: Equatable, Sendable {
    let name: String
    let value: String
}

/// A complete, well-formed request as ``HttpRequestParser`` delivers it.
struct HttpRequest: Equatable, Sendable {
    /// The method token, case-sensitive as RFC 9110 says ("GET", "PUT").
    let method: String
    /// The request target in origin form ("/api/v1/vm.info?x"; an absolute-form target is reduced to it).
    let target: String
    /// HTTP/1.`minorVersion` (0 or 1).
    let minorVersion: Int
    let headers: [HttpHeader]
    let body: [UInt8]
    /// Whether the client wants the connection kept open after the response (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    let keepAlive: Bool

    /// The target without its query string.
    var path: Substring { target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0] }

    /// The value of the first header named `name` (lower-case).
    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}

/// A response, and what to do once it has been written.
struct HttpResponse: Sendable {
    var status: HttpStatus
    var headers: [HttpHeader] = []
    var body: [UInt8] = []
    /// Close the connection after this response, whatever the client asked for.
    var closeConnection = false
    /// Runs once the response has been written out, or when that became impossible (the client went away,
    /// the server stopped). `vmm.shutdown` uses it to exit only after its answer is on its way.
    var afterSend: (@Sendable () -> Void)?

    init(status: HttpStatus, headers: [HttpHeader] = [], body: [UInt8] = [], closeConnection: Bool = false) {
        self.status = status
        self.headers = headers
        self.body = body
        self.closeConnection = closeConnection
    }

    /// A response with a JSON body.
    static func json(_ status: HttpStatus, _ value: JsonValue) -> HttpResponse {
        HttpResponse(status: status, headers: [HttpHeader(name: "Content-Type", value: "application/json")],
                     body: Array(value.serialized().utf8))
    }

    /// The bytes on the wire. `keepAlive` decides the `Connection` header; 1xx/204/304 carry no body and
    /// no Content-Length. The answer to a HEAD request (`headRequest`) has the Content-Length of the body
    /// that a GET would get, and no body (RFC 9110 §9.3.2).
    func serialized(keepAlive: Bool, headRequest: Bool = false) -> [UInt8] {
        var head = "HTTP/1.1 \(status.code) \(status.reason)\r\nServer: actor-vmm\r\n"
        for header in headers { head += "\(header.name): \(header.value)\r\n" }
        let bodyless = status.code == 204 || status.code == 304 || status.code < 200
        if !bodyless { head += "Content-Length: \(body.count)\r\n" }
        head += keepAlive ? "" : "Connection: close\r\n"
        head += "\r\n"
        return Array(head.utf8) + (bodyless || headRequest ? [] : body)
    }
}
