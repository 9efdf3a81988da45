import EpollLoop

extension VcpuManager {
    /// Every vCPU's state, in id order. Only while the vCPUs are parked (or not started): KVM takes each
    /// vCPU's mutex for these ioctls, so a parked thread's vCPU is read from this actor's loop; a running
    /// one would change under them.
    public func captureVcpuStates(xsaveSize: Int, msrIndices: [UInt32]) throws(SnapshotError) -> [VcpuState] {
        guard state != .running else { throw .io("cannot capture vCPU state while the vCPUs run (pause first)") }
        var states: [VcpuState] = []
        for context in contexts {
            do throws(KvmError) {
                states.append(try context.vcpu.captureState(xsaveSize: xsaveSize, msrIndices: msrIndices))
            } catch {
                throw .io("vcpu\(context.vcpu.id): \(error)")
            }
        }
        return states
    }

    /// Loads `states` (one per vCPU, in id order) before the vCPU threads start.
    public func restoreVcpuStates(_ states: [VcpuState]) throws(SnapshotError) {
        guard threads.isEmpty else { throw .io("cannot restore vCPU state once the vCPUs have started") }
        guard states.count == contexts.count else {
            throw .mismatch("this VM has \(contexts.count) vCPU(s), the snapshot has \(states.count)")
        }
        for (context, state) in zip(contexts, states) { try context.vcpu.restoreState(state) }
    }
}

extension VcpuManager {
    /// Starts the vCPU threads parked: each parks before its first `KVM_RUN` (a restored VM that is to
    /// come back paused); ``resume()`` lets them run.
    public func startParked() throws(Errno) {
        for context in contexts { context.vcpu.requested.store(VcpuRunState.paused.rawValue, ordering: .sequentiallyConsistent) }
        try start()
        for context in contexts where !context.exited.load(ordering: .acquiring) { context.pausedAck.wait() }
        state = .paused
    }
}
