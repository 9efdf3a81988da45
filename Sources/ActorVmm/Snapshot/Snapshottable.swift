/// A device that can stop for a consistent cut and carry its state across a snapshot or a migration
/// (Cloud Hypervisor's `Pausable` + `Snapshottable`).
///
/// Every method is isolated to the device actor, so it runs on the device's own executor, between two of
/// its jobs, never in the middle of a queue turn or a register access: the actor model gives the
/// consistent cut for free. The VMM pauses the vCPUs first (no register accesses arrive), then quiesces
/// every device, captures, and resumes in the reverse order (docs/snapshot.md).
public protocol Snapshottable: Actor {
    /// The id the device's state is filed under (unique in the VM).
    nonisolated var snapshotID: String { get }
    /// Stops all activity: no queue processing, no host input, no receive, no timers. Doorbells that ring
    /// meanwhile are remembered and served by ``resume()``. Async so that a device whose queues other actors
    /// serve (per-queue placement) can wait for them to stop and hand their state back.
    func quiesce() async
    /// Undoes ``quiesce()`` (or starts a restored device): serves what arrived meanwhile.
    func resume() async
    /// The device's state, for ``restoreState(_:)`` on a device built the same way. Call while quiesced.
    func captureState() -> [UInt8]
    /// Loads state captured by ``captureState()``; the device stays quiesced until ``resume()``. Refuses
    /// state that does not fit this device (another type, queue count, feature set) with a one-line error.
    func restoreState(_ bytes: [UInt8]) throws(SnapshotError)
}
