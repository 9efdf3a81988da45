import CKvm

/// Per-event timestamps of one virtio device, for the benchmarks (`actor-vmm-bench`, rows 2 and 3). Off by
/// default: a ``VirtioPciDevice`` records only when one is attached (``VirtioPciDevice/attach(recorder:)``);
/// without one each event costs a single nil check, and `actor-vmm` never attaches one.
///
/// Three events, each stamped with the time-stamp counter where it happens, on the thread that holds the
/// device's isolation (normally its event loop):
/// - `doorbell`: the loop found a queue's doorbell eventfd (`KVM_IOEVENTFD`) readable — stamped as the fd
///   handler starts, before the eventfd is drained and before the queue is looked at;
/// - `completed`: a request was put on the used ring (after the used index was published);
/// - `interrupt`: the device signalled a queue's MSI-X vector — stamped after the irqfd write returned (or
///   after the vector was marked pending, if the driver had masked it).
///
/// The samples go into a ring allocated up front (no lock, no atomic, no allocation when recording); it
/// keeps the most recent `capacity` events.
public final class VirtioEventRecorder: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): written only inside the device actor's isolation (one thread at a time);
    // read only after `await device.stop()`, whose hop to the actor orders every write before the read.

    public enum Kind: UInt8, Sendable {
        case doorbell = 1, completed = 2, interrupt = 3
    }

    /// One event: when, what, and for which queue (`interrupt`: the MSI-X vector).
    public struct Event: Sendable, Equatable {
        public var tsc: UInt64
        public var kind: Kind
        public var queue: UInt16

        public init(tsc: UInt64, kind: Kind, queue: UInt16) {
            self.tsc = tsc; self.kind = kind; self.queue = queue
        }
    }

    private let buffer: UnsafeMutablePointer<Event>
    private let mask: Int
    private var recorded = 0

    /// A recorder keeping the last `capacity` events (rounded up to a power of two, at least 64).
    public init(capacity: Int) {
        var size = 64
        while size < capacity { size <<= 1 }
        buffer = .allocate(capacity: size)
        buffer.initialize(repeating: Event(tsc: 0, kind: .doorbell, queue: 0), count: size)
        mask = size - 1
    }

    deinit { buffer.deallocate() }

    public var capacity: Int { mask + 1 }

    /// Stamps one event. Called inside the device's isolation only.
    @inline(__always)
    func record(_ kind: Kind, queue: UInt16) {
        buffer[recorded & mask] = Event(tsc: ckvm_rdtsc(), kind: kind, queue: queue)
        recorded &+= 1
    }

    /// Events recorded so far (including those the ring has overwritten). Only after the device stopped.
    public var recordedCount: Int { recorded }

    /// The retained events, oldest first. Only after the device stopped.
    public func events() -> [Event] {
        let kept = min(recorded, capacity)
        return (recorded - kept..<recorded).map { buffer[$0 & mask] }
    }
}
