/// A failed API request: the HTTP status and Cloud Hypervisor's error body, a JSON array of messages from
/// the general to the specific (`["cannot pause the VM", "the VM is not booted (state: Created)"]`).
struct ApiError: Error, Equatable, Sendable, CustomStringConvertible {
    let status: HttpStatus
    let messages: [String]

    init(_ status: HttpStatus, _ messages: String...) {
        self.status = status
        self.messages = messages
    }

    /// The messages as one line.
    var description: String { messages.joined(separator: ": ") }

    var response: HttpResponse { .json(status, .array(messages.map { .string($0) })) }

    /// The status for a lifecycle error, as Cloud Hypervisor's OpenAPI file has them: 404 no VM, 405 the
    /// wrong state, 409 a VM exists, 503 the VMM is exiting, 400 an invalid config, 500 a host fault, 501
    /// not implemented.
    init(_ error: VmmError) {
        status = switch error.kind {
        case .noVm: .notFound
        case .invalidTransition: .methodNotAllowed
        case .vmExists: .conflict
        case .shuttingDown: .serviceUnavailable
        case .invalidConfig: .badRequest
        case .hostFault: .internalServerError
        case .notSupported: .notImplemented
        case .badRequest: .badRequest
        case .busy: .tooManyRequests
        case .notFound: .notFound
        case .conflict: .conflict
        }
        messages = error.messages
    }

    /// 400 for a configuration that is invalid or asks for what the VMM cannot do.
    static func invalidConfig(_ error: ConfigError, _ summary: String = "invalid VM configuration") -> ApiError {
        ApiError(.badRequest, summary, error.description)
    }
}
