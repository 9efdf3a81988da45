import EpollLoop
import Glibc
import Synchronization

/// The bus snapshot the vCPU threads dispatch on, replaceable while they run (PCI hotplug: docs/hotplug.md).
///
/// Readers (the vCPU threads) pay one sequentially consistent store and one load per exit, and neither
/// lock nor allocate: an exit is bracketed by ``BusReader/enter()`` and ``BusReader/leave()``, and in
/// between it uses ``currentUnretained`` without retaining it. A writer ``publish(_:)``es a new snapshot (one atomic
/// store) and keeps the old one alive; ``waitForQuiescence(of:)`` returns once every reader that might
/// still use an older snapshot has left its exit, and only then are the older snapshots released. That is
/// quiescent-state-based reclamation: a reader's counter is odd while it dispatches an exit and even
/// otherwise (in `KVM_RUN`, parked, stopped).
public final class BusSnapshotCell: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `bits` holds the bits of an `Unmanaged<Snapshot>` that `owned`
    // retains; `owned` is behind a mutex; snapshots are immutable. A snapshot leaves `owned` only in
    // `waitForQuiescence`, after every reader that could have loaded its bits has left its exit.

    /// One published snapshot. Immutable.
    public final class Snapshot: Sendable {
        public let buses: IoBuses
        /// 1 for the first snapshot, then one more per ``BusSnapshotCell/publish(_:)``.
        public let generation: UInt64
        init(buses: IoBuses, generation: UInt64) { self.buses = buses; self.generation = generation }
    }

    private let bits: Atomic<UInt>
    /// The current snapshot (last) and the ones replaced but maybe still in use, oldest first.
    private let owned: Mutex<[Snapshot]>

    public init(_ buses: IoBuses) {
        let first = Snapshot(buses: buses, generation: 1)
        owned = Mutex([first])
        bits = Atomic(UInt(bitPattern: Unmanaged.passUnretained(first).toOpaque()))
    }

    /// The snapshot in use now, not retained: valid while the calling reader is between ``BusReader/enter()``
    /// and ``BusReader/leave()`` (or while the caller holds a reference from ``snapshot``).
    @inline(__always)
    public var currentUnretained: Unmanaged<Snapshot> {
        let bits = self.bits.load(ordering: .sequentiallyConsistent)
        // SAFETY: the bits are always those of a snapshot `owned` retains (see the type's comment).
        return Unmanaged<Snapshot>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)
    }

    /// The current snapshot, retained (for code outside an exit: tests, counters).
    public var snapshot: Snapshot { owned.withLock { $0.last! } }

    /// Makes `buses` what every later exit dispatches on. Does not wait; returns the new generation.
    @discardableResult
    public func publish(_ buses: IoBuses) -> UInt64 {
        owned.withLock { owned in
            let next = Snapshot(buses: buses, generation: owned.last!.generation + 1)
            owned.append(next)
            bits.store(UInt(bitPattern: Unmanaged.passUnretained(next).toOpaque()), ordering: .sequentiallyConsistent)
            return next.generation
        }
    }

    /// Waits until none of `readers` can still be dispatching on a snapshot older than the current one, then
    /// releases those older snapshots (and whatever devices only they referenced). A reader that is in the
    /// guest, parked or gone counts as quiescent at once; one inside an exit is waited for until it leaves
    /// it (an exit's dispatch is short: it never waits for another exit). Blocks the calling thread, so it
    /// must not run on a loop that an exit's dispatch may wait for (a device loop).
    public func waitForQuiescence(of readers: [BusReader]) {
        let keep = owned.withLock { $0.last!.generation }
        // The counters are read after `publish`'s store (both sequentially consistent): a reader that entered
        // later loads the new snapshot; one inside an exit now is seen with an odd counter.
        for reader in readers {
            let seen = reader.state.load(ordering: .sequentiallyConsistent)
            guard seen & 1 == 1 else { continue }
            var spins = 0
            while reader.state.load(ordering: .sequentiallyConsistent) == seen {
                spins += 1
                if spins < 1000 { sched_yield() } else { usleep(100) }
            }
        }
        owned.withLock { owned in owned.removeAll { $0.generation < keep } }
    }

    /// How many snapshots are alive (the current one plus those awaiting quiescence); for tests.
    public var liveSnapshots: Int { owned.withLock { $0.count } }
}

/// One reader's (vCPU thread's) quiescence counter: odd while it dispatches an exit on a snapshot it loaded
/// from a ``BusSnapshotCell``, even otherwise. Only its own thread writes it.
public final class BusReader: Sendable {
    let state = Atomic<UInt64>(0)

    public init() {}

    /// Before loading the cell's snapshot for an exit: the store is sequentially consistent so that the
    /// load after it cannot see a snapshot a writer has already replaced and then checked this reader for.
    @inline(__always)
    public func enter() {
        state.store(state.load(ordering: .relaxed) &+ 1, ordering: .sequentiallyConsistent)
    }

    /// After the exit has been dispatched: the snapshot may go from now on.
    @inline(__always)
    public func leave() {
        state.store(state.load(ordering: .relaxed) &+ 1, ordering: .releasing)
    }

    /// True while inside an exit (for tests).
    public var isInsideExit: Bool { state.load(ordering: .acquiring) & 1 == 1 }
}
