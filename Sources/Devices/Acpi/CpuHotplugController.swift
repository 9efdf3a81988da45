import ActorVmm
import EpollLoop

/// The CPU hotplug register block (Cloud Hypervisor's CPU manager device) behind the DSDT's `\_SB.PRES`
/// and the processor objects `\_SB.CPUS.Cnnn` (Boot's `CpuHotplugAml`):
///
/// | offset | width | read | write |
/// | --- | --- | --- | --- |
/// | 0 | 4 | CSEL: the selected vCPU | selects a vCPU |
/// | 4 | 1 | status of the selected vCPU: bit 0 enabled (CPEN), 1 inserting (CINS), 2 removing (CRMV) | 1 in bit 1 or 2 acknowledges the insertion/removal notice; 1 in bit 3 (CEJ0) ejects the vCPU |
///
/// The VMM calls ``insert(_:)`` after creating and starting a vCPU and ``requestRemoval(_:)`` to ask the
/// guest to give one back, each followed by the GED's CPU event. The guest's `CSCN` notifies the
/// processor objects whose bits are set and acknowledges them; after offlining a vCPU the guest runs its
/// `_EJ0`, and the vCPU arrives on ``ejections`` for the VMM to stop its thread. vCPU 0 is never ejected,
/// nor a vCPU the host has not asked for. Out-of-range selections read 0 and ignore writes.
public actor CpuHotplugController: BusDevice {
    public static let size: UInt64 = 12

    public enum Register {
        public static let selector: UInt64 = 0, status: UInt64 = 4
    }
    public enum Status {
        public static let enabled: UInt8 = 1 << 0, inserting: UInt8 = 1 << 1, removing: UInt8 = 1 << 2, eject: UInt8 = 1 << 3
    }

    struct State {
        var enabled = false, inserting = false, removing = false
        /// The host asked for removal and the guest has not ejected yet (kept apart from `removing`, which
        /// the guest's scan acknowledges before it ejects).
        var removalPending = false
    }

    public nonisolated let loop: EventLoop
    public nonisolated let maxVcpus: Int
    /// vCPUs the guest ejected: the VMM stops and joins their threads.
    public nonisolated let ejections: AsyncStream<Int>
    private let ejectionSink: AsyncStream<Int>.Continuation
    var states: [State]
    var selected: UInt32 = 0

    /// vCPUs 0..<`bootVcpus` are enabled.
    public init(loop: EventLoop, bootVcpus: Int, maxVcpus: Int) {
        precondition((1...maxVcpus).contains(bootVcpus), "boot vCPUs must be 1 to max")
        self.loop = loop
        self.maxVcpus = maxVcpus
        states = (0..<maxVcpus).map { State(enabled: $0 < bootVcpus) }
        (ejections, ejectionSink) = AsyncStream.makeStream(of: Int.self)
    }

    /// True while the guest has not yet ejected a vCPU the host asked for.
    public var removalPending: Bool { states.contains { $0.removalPending } }

    /// The vCPUs that are enabled (present to the guest).
    public var enabledVcpus: [Int] { states.indices.filter { states[$0].enabled } }

    /// vCPU `id` exists and runs: the guest's next scan notifies its processor object ("device check").
    public func insert(_ id: Int) {
        precondition(states.indices.contains(id), "vCPU \(id) is beyond max \(maxVcpus)")
        states[id] = State(enabled: true, inserting: true)
    }

    /// Asks the guest to offline and eject vCPU `id` ("eject request" on the next scan).
    public func requestRemoval(_ id: Int) {
        precondition(states.indices.contains(id) && id != 0, "vCPU \(id) cannot be removed")
        guard states[id].enabled else { return }
        states[id].removing = true
        states[id].removalPending = true
    }

    public func finish() { ejectionSink.finish() }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        switch (offset, width) {
        case (Register.selector, 4):
            return UInt64(selected)
        case (Register.status, 1):
            guard let state = selectedState else { return 0 }
            return UInt64((state.enabled ? Status.enabled : 0) | (state.inserting ? Status.inserting : 0)
                          | (state.removing ? Status.removing : 0))
        default:
            return 0
        }
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        switch (offset, width) {
        case (Register.selector, 4):
            selected = UInt32(truncatingIfNeeded: value)
        case (Register.status, 1):
            let id = Int(selected)
            guard states.indices.contains(id) else { return }
            let bits = UInt8(truncatingIfNeeded: value)
            if bits & Status.inserting != 0 { states[id].inserting = false }
            if bits & Status.removing != 0 { states[id].removing = false }
            if bits & Status.eject != 0 {
                guard id != 0, states[id].removalPending else {
                    Log.debug("cpu hotplug: the guest ejected vCPU \(id), which the host did not ask to remove; ignored")
                    return
                }
                states[id] = State()
                ejectionSink.yield(id)
            }
        default:
            break
        }
    }

    private var selectedState: State? {
        states.indices.contains(Int(selected)) ? states[Int(selected)] : nil
    }
}
