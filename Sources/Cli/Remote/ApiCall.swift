/// One request to an ActorVMM API socket, for programs outside this module (`actor-vmm-bench` drives
/// snapshots and migrations with it): `HttpClient` without its internal types.
public enum ApiCall {
    /// The answer: HTTP status and body.
    public struct Answer: Sendable {
        public let status: Int
        public let body: String
    }

    /// Sends `method /api/v1/endpoint` with `body` (JSON) to `socketPath` and waits at most `timeout`
    /// seconds for each read; a failure to connect, send or read is the error's one-line text.
    public static func send(socketPath: String, method: String, endpoint: String, body: String? = nil,
                            timeout: Int = 300) -> Result<Answer, ApiCallError> {
        do throws(SocketError) {
            let response = try HttpClient.send(socketPath: socketPath, method: method, path: "/api/v1/" + endpoint,
                                               body: body.map { Array($0.utf8) }, timeout: timeout)
            return .success(Answer(status: response.status, body: String(decoding: response.body, as: UTF8.self)))
        } catch {
            return .failure(ApiCallError(description: "\(endpoint): \(error)"))
        }
    }
}

/// Why an ``ApiCall`` got no answer.
public struct ApiCallError: Error, Sendable, CustomStringConvertible {
    public let description: String
}
