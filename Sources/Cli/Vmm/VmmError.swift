/// Why the lifecycle refused or failed an operation, typed by what went wrong. The lifecycle speaks no HTTP:
/// the API router alone turns a kind into a status (``ApiError/init(_:)``), the command line into an exit
/// code. `messages` go from the general to the specific (`["cannot pause the VM", "the VM is not booted
/// (state: Created)"]`), as Cloud Hypervisor's error bodies do.
struct VmmError: Error, Equatable, Sendable, CustomStringConvertible {
    enum Kind: Equatable, Sendable {
        /// No VM has been created.
        case noVm
        /// The VM is in a state the action does not start from.
        case invalidTransition
        /// vm.create while a VM exists.
        case vmExists
        /// The VMM is exiting and takes no more work.
        case shuttingDown
        /// The configuration is invalid, or asks for what the host or the VMM cannot do (the user's fault).
        case invalidConfig(ConfigError)
        /// The host failed (KVM, a thread, a descriptor): not the user's fault.
        case hostFault
        /// The action exists but ActorVMM does not implement it.
        case notSupported
        /// The request asks for what the VM cannot do (a resize beyond max, an unknown device id).
        case badRequest
        /// The VM is busy with an earlier request of this kind (a vCPU removal the guest has not finished).
        case busy
        /// The request names something the VM does not have (vm.remove-device with an unknown id).
        case notFound
        /// The request would give a second device an id in use.
        case conflict
    }

    let kind: Kind
    let messages: [String]

    init(_ kind: Kind, _ messages: String...) {
        self.kind = kind
        self.messages = messages
    }

    /// An invalid configuration: `summary`, then the field and what is wrong with it.
    static func invalidConfig(_ error: ConfigError, _ summary: String = "invalid VM configuration") -> VmmError {
        VmmError(.invalidConfig(error), summary, error.description)
    }

    /// The user's fault (exit code 2 on the command line), not the host's.
    var isConfigError: Bool {
        if case .invalidConfig = kind { true } else { false }
    }

    /// The messages as one line.
    var description: String { messages.joined(separator: ": ") }
}
