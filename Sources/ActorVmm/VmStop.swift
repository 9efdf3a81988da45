import EpollLoop
import Synchronization

/// Why a VM stopped; decides the process exit code.
public enum VmStopReason: Sendable, Equatable, CustomStringConvertible {
    /// The guest powered off (ACPI sleep register, S5). Exit code 0.
    case poweredOff
    /// The guest asked for a reset (i8042 0xFE, ACPI reset register). The VMM reboots the VM (a new machine
    /// from the same config); exit code 0 if it stops here instead.
    case resetRequested(source: String)
    /// The host asked the VMM to stop (a signal, an API call). Exit code 0.
    case stopRequested(String)
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`). Exit code 1.
    case tripleFault(rip: UInt64)
    /// An exit the VMM cannot handle. Exit code 1.
    case unhandledExit(reason: String, rip: UInt64)
    /// A host-side failure while running the guest. Exit code 1.
    case hostError(String)
    /// In compatibility mode, an instruction neither the host's emulator nor ActorVMM's can run
    /// (docs/compat.md). `detail` says why when the instruction itself is known. Exit code 1.
    case unhandledInstruction(rip: UInt64, bytes: [UInt8], mnemonic: String?, detail: String?)

    public var exitCode: Int32 {
        switch self {
        case .poweredOff, .resetRequested, .stopRequested: 0
        case .tripleFault, .unhandledExit, .hostError, .unhandledInstruction: 1
        }
    }

    public var description: String {
        switch self {
        case .poweredOff: "guest powered off"
        case .resetRequested(let source): "guest requested a reset (\(source))"
        case .stopRequested(let why): "VM stopped: \(why)"
        case .tripleFault(let rip): "guest triple-faulted (KVM_EXIT_SHUTDOWN) at RIP \(hex(rip))"
        case .unhandledExit(let reason, let rip): "unhandled VM exit \(reason) at RIP \(hex(rip))"
        case .hostError(let what): "host error while running the guest: \(what)"
        case .unhandledInstruction(let rip, let bytes, let mnemonic, let detail):
            "unhandled instruction at RIP \(hex(rip)) (bytes \(bytes.isEmpty ? "unavailable" : DecodedInstruction.hex(bytes)), "
                + "mnemonic \(mnemonic ?? "unknown"))" + (detail.map { ": " + $0 } ?? "")
        }
    }
}

/// What devices may ask of the VM as a whole: power off or reset. Injected, so devices never see KVM.
public protocol PowerControl: Sendable {
    func requestStop(_ reason: VmStopReason)
}

/// The VM's stop latch: the first reason wins; a thread may wait for it, and `onStop` hears of it.
public final class StopLatch: PowerControl, Sendable {
    private let reason = Mutex<VmStopReason?>(nil)
    private let parker = ThreadParker()
    private let onStop: (@Sendable (VmStopReason) -> Void)?

    /// `onStop` runs once, on the thread of the first ``requestStop(_:)`` (a vCPU thread, a device loop):
    /// it must be short and must not block.
    public init(onStop: (@Sendable (VmStopReason) -> Void)? = nil) {
        self.onStop = onStop
    }

    public func requestStop(_ newReason: VmStopReason) {
        let first = reason.withLock { current -> Bool in
            guard current == nil else { return false }
            current = newReason
            return true
        }
        if first {
            parker.signal()
            onStop?(newReason)
        }
    }

    /// The reason, if the VM has been asked to stop.
    public var stopReason: VmStopReason? { reason.withLock { $0 } }

    /// Blocks until some thread requests a stop; returns the first reason.
    public func wait() -> VmStopReason {
        parker.wait()
        parker.signal()  // later waiters return at once too
        return reason.withLock { $0! }
    }
}
