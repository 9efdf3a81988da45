/// The VM's lifecycle state, as `vm.info` reports it (Cloud Hypervisor's `VmState` names).
enum VmState: String, Sendable, CaseIterable {
    /// Configured (vm.create) but never booted: no vCPU, no device, no guest RAM in use.
    case created = "Created"
    case running = "Running"
    case paused = "Paused"
    /// Stopped by vm.shutdown (or a failed reboot); the config is kept and vm.boot starts it afresh.
    case shutdown = "Shutdown"
}

/// What the API asks of the VM's lifecycle.
enum VmAction: String, Sendable, CaseIterable {
    case create, boot, pause, resume, shutdown, reboot, powerButton = "power-button", resize, delete
    /// vm.add-disk, vm.add-net and vm.remove-device: hotplug while running, a config change before boot.
    case addDevice = "add-device", removeDevice = "remove-device"

    /// "cannot pause the VM": the first message of an error.
    var failure: String {
        switch self {
        case .create: "cannot create the VM"
        case .powerButton: "cannot press the power button"
        case .addDevice: "cannot add the device"
        case .removeDevice: "cannot remove the device"
        default: "cannot \(rawValue) the VM"
        }
    }
}

/// The lifecycle state machine, one pure function so that every transition is tested without KVM:
///
/// ```
/// (none) ──create──▶ Created ──boot──▶ Running ──pause──▶ Paused
///                                       ▲   │  ◀──resume──   │
///               Shutdown ──boot─────────┘   └──shutdown──┬───┘ (reboot: Running/Paused ▶ Running)
///                  ▲─────────────────────────────────────┘
/// any state ──delete──▶ (none)
/// ```
///
/// A refusal is typed (``VmmError/Kind``: no VM, a wrong state, a VM that exists); the API router maps it to
/// the OpenAPI file's statuses (404, 405, 409).
enum VmLifecycle {
    /// The state after `action` from `state` (nil: no VM), or the error that refuses it.
    static func next(_ action: VmAction, from state: VmState?) -> Result<VmState?, VmmError> {
        guard let state else {
            switch action {
            case .create: return .success(.created)
            case .delete: return .success(nil)
            default: return .failure(VmmError(.noVm, action.failure, "no VM has been created (use vm.create first)"))
            }
        }
        func wrongState(_ why: String) -> Result<VmState?, VmmError> {
            .failure(VmmError(.invalidTransition, action.failure, "\(why) (state: \(state.rawValue))"))
        }
        switch (action, state) {
        case (.create, _):
            return .failure(VmmError(.vmExists, action.failure, "a VM already exists (state: \(state.rawValue)); delete it first"))
        case (.delete, _):
            return .success(nil)
        case (.boot, .created), (.boot, .shutdown):
            return .success(.running)
        case (.boot, _):
            return wrongState("the VM is already booted")
        case (.pause, .running):
            return .success(.paused)
        case (.pause, .paused):
            return wrongState("the VM is already paused")
        case (.resume, .paused):
            return .success(.running)
        case (.resume, _):
            return wrongState("the VM is not paused")
        case (.shutdown, .running), (.shutdown, .paused):
            return .success(.shutdown)
        case (.reboot, .running), (.reboot, .paused):
            return .success(.running)
        case (.powerButton, .running), (.powerButton, .paused):
            return .success(state)
        case (.resize, .running):
            return .success(.running)
        case (.resize, .paused), (.addDevice, .paused), (.removeDevice, .paused):
            return wrongState("the VM is paused (resume it first)")
        case (.addDevice, _), (.removeDevice, _):
            return .success(state)  // running: hotplug; created or shut down: the config only (a cold add)
        case (.pause, _), (.shutdown, _), (.reboot, _), (.powerButton, _), (.resize, _):
            return wrongState("the VM is not booted")
        }
    }
}
