import CKvm
import Synchronization

/// Per-exit timestamps for the benchmarks (`actor-vmm-bench`). Off by default: a vCPU thread records only
/// when a recorder is attached to it (``VcpuThreadOptions/recorder``); without one, the vCPU loop pays a
/// single nil check per exit and `actor-vmm` never attaches one.
///
/// For each exit the vCPU thread handled, the recorder keeps three words in a buffer allocated up front (no
/// allocation, no lock, no atomic on the hot path):
/// - `exitTSC`: the time-stamp counter right after `KVM_RUN` returned;
/// - `doneTSC`: the counter after the exit was handled, just before `KVM_RUN` is entered again;
/// - `key`: what the exit was (PIO/MMIO, direction, port or address; see ``ExitKey``).
///
/// `doneTSC − exitTSC` is the VMM's own time for the exit (look-up, hand-off, handler). The difference of
/// consecutive `exitTSC`s is the whole round trip seen from the host: handling, re-entry, the guest running
/// to its next access, the exit back out of the guest. The buffer is a ring: it holds the most recent
/// `capacity` exits.
public final class ExitRecorder: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `buffer` and `recorded` are written only by the one vCPU thread the
    // recorder is attached to (`attach()` enforces one); `samples()` and `recordedCount` may be read only
    // after that thread has been joined (`VcpuManager.stop()`), and pthread_join orders the writes first.

    /// One handled exit.
    public struct Sample: Sendable, Equatable {
        public var exitTSC: UInt64
        public var doneTSC: UInt64
        public var key: ExitKey

        public init(exitTSC: UInt64, doneTSC: UInt64, key: ExitKey) {
            self.exitTSC = exitTSC; self.doneTSC = doneTSC; self.key = key
        }
    }

    private let buffer: UnsafeMutablePointer<Sample>
    private let mask: Int
    private var recorded = 0
    private let attached = Atomic<Bool>(false)

    /// A recorder keeping the last `capacity` exits (rounded up to a power of two, at least 64).
    public init(capacity: Int) {
        var size = 64
        while size < capacity { size <<= 1 }
        buffer = .allocate(capacity: size)
        buffer.initialize(repeating: Sample(exitTSC: 0, doneTSC: 0, key: ExitKey(rawValue: 0)), count: size)
        mask = size - 1
    }

    deinit { buffer.deallocate() }

    /// How many samples the ring holds at most.
    public var capacity: Int { mask + 1 }

    /// Claims the recorder for one vCPU thread; a second claim is a programming error.
    func attach() {
        precondition(!attached.exchange(true, ordering: .relaxed), "an ExitRecorder records one vCPU only")
    }

    /// Records the exit described by `run`. Called by the vCPU thread only.
    @inline(__always)
    func record(exitTSC: UInt64, doneTSC: UInt64, run: UnsafeMutablePointer<kvm_run>) {
        buffer[recorded & mask] = Sample(exitTSC: exitTSC, doneTSC: doneTSC, key: ExitKey(run))
        recorded &+= 1
    }

    /// Exits recorded so far (including those the ring has overwritten). Only after the vCPU thread ended.
    public var recordedCount: Int { recorded }

    /// The retained samples, oldest first. Only after the vCPU thread has been joined.
    public func samples() -> [Sample] {
        let kept = min(recorded, capacity)
        return (recorded - kept..<recorded).map { buffer[$0 & mask] }
    }
}

/// What kind of exit a sample is, packed in one word: bits 63–62 the kind (1 PIO, 2 MMIO, 3 other), bit 61
/// set for a write (OUT / MMIO write), the low bits the port, the guest-physical address, or the exit reason.
public struct ExitKey: Hashable, Sendable {
    public enum Kind: UInt64, Sendable { case none = 0, pio = 1, mmio = 2, other = 3 }

    public let rawValue: UInt64
    static let writeBit: UInt64 = 1 << 61
    static let addressMask: UInt64 = (1 << 61) - 1

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public init(kind: Kind, isWrite: Bool, address: UInt64) {
        rawValue = kind.rawValue << 62 | (isWrite ? Self.writeBit : 0) | (address & Self.addressMask)
    }

    /// Decodes the exit in a `kvm_run` page (after `KVM_RUN` returned, before it is entered again).
    @inline(__always)
    init(_ run: UnsafeMutablePointer<kvm_run>) {
        switch Int32(run.pointee.exit_reason) {
        case KVM_EXIT_IO:
            self.init(kind: .pio, isWrite: run.pointee.io.direction == UInt8(KVM_EXIT_IO_OUT),
                      address: UInt64(run.pointee.io.port))
        case KVM_EXIT_MMIO:
            self.init(kind: .mmio, isWrite: run.pointee.mmio.is_write != 0, address: run.pointee.mmio.phys_addr)
        default:
            self.init(kind: .other, isWrite: false, address: UInt64(run.pointee.exit_reason))
        }
    }

    public var kind: Kind { Kind(rawValue: rawValue >> 62)! }
    public var isWrite: Bool { rawValue & Self.writeBit != 0 }
    /// The port (PIO), the guest-physical address (MMIO), or the exit reason (other).
    public var address: UInt64 { rawValue & Self.addressMask }
}
