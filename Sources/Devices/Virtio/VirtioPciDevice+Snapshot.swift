import ActorVmm
import EpollLoop

/// A virtio device's part in a snapshot, all on the device's own executor (docs/snapshot.md).
///
/// Quiesced, the device serves no queue: a doorbell is drained and noted, host input (TAP, terminal) is
/// not watched. ``resume()`` serves the noted queues and sends the interrupts still owed, so a request the
/// driver posted meanwhile — or before a snapshot — completes after it.
///
/// State: device type u16 | offered, accepted features u64 | status, config generation, ISR u8 |
/// feature selects u32, u32 | queue select, config vector u16 | PCI configuration image (blob, 256) |
/// MSI-X enabled, function mask (bool) | vector count u32 | per vector: address low, high, data,
/// control u32, pending bool | queue count u32 | per queue: size u16, ready bool, descriptor table,
/// available ring, used ring u64, vector u16, event index, indirect bool, next available, next used,
/// signalled used u16, signalled valid, interrupt owed bool | backend state (blob).
extension VirtioPciDevice: Snapshottable {
    public nonisolated var snapshotID: String { name }

    /// A doorbell (the queue's eventfd, already drained): served now, or noted while quiesced.
    func doorbell(_ index: Int) {
        if quiesced {
            pendingDoorbells[index] = true
        } else {
            queueNotified(index)
        }
    }

    /// Stops serving; with queue workers, they stop first and hand their queues back, so that the state a
    /// snapshot captures is all here.
    public func quiesce() async {
        guard !quiesced else { return }
        quiesceServing()
        await quiesceWorkers()
    }

    func quiesceServing() {
        guard !quiesced else { return }
        quiesced = true
        backend.quiesce(device: self)
    }

    public var isQuiesced: Bool { quiesced }

    /// Serves again; with queue workers, an active device then hands them their queues (after its own backend
    /// has resumed: a restored net backend works out the receive mode the workers follow there).
    public func resume() async {
        guard quiesced else { return }
        resumeServing()
        await resumeWorkers()
    }

    /// Serves the queues this actor serves whose doorbells were noted, and sends the interrupts owed.
    func resumeServing() {
        guard quiesced else { return }
        quiesced = false
        backend.resume(device: self)
        for index in queues.indices where servesDoorbell(index) {
            if pendingDoorbells[index] {
                pendingDoorbells[index] = false
                queueNotified(index)
            }
            interruptIfNeeded(queue: index)
        }
    }

    public func captureState() -> [UInt8] {
        var out = SnapshotEncoder()
        out.u16(backend.deviceType.rawValue)
        out.u64(offeredFeatures)
        out.u64(acceptedFeatures)
        out.u8(status)
        out.u8(configGeneration)
        out.u8(isr)
        out.u32(deviceFeatureSelect)
        out.u32(driverFeatureSelect)
        out.u16(queueSelect)
        out.u16(configVector)
        out.blob(config.bytes)
        out.bool(msix.enabled)
        out.bool(msix.functionMasked)
        out.u32(UInt32(msix.entries.count))
        for (entry, pending) in zip(msix.entries, msix.pending) {
            for word in [entry.addressLow, entry.addressHigh, entry.data, entry.control] { out.u32(word) }
            out.bool(pending)
        }
        out.u32(UInt32(queues.count))
        for (index, queue) in queues.enumerated() {
            out.u16(queue.size)
            out.bool(queue.ready)
            for address in [queue.descriptorTable, queue.availableRing, queue.usedRing] { out.u64(address.rawValue) }
            out.u16(queue.msixVector)
            out.bool(queue.eventIndex)
            out.bool(queue.indirectDescriptors)
            out.u16(queue.nextAvailable)
            out.u16(queue.nextUsed)
            out.u16(queue.signalledUsed)
            out.bool(queue.signalledValid)
            out.bool(unsignalled[index])
        }
        out.blob(backend.captureState())
        return out.bytes
    }

    public func restoreState(_ bytes: [UInt8]) throws(SnapshotError) {
        var input = SnapshotDecoder(bytes, context: "device '\(name)'")
        let type = try input.u16()
        guard type == backend.deviceType.rawValue else {
            throw .mismatch("device '\(name)' is virtio type \(backend.deviceType.rawValue), the snapshot has type \(type)")
        }
        let offered = try input.u64()
        guard offered == offeredFeatures else {
            throw .mismatch("device '\(name)' offers features \(hex(offeredFeatures)), the snapshot's offered \(hex(offered))")
        }
        let accepted = try input.u64()
        guard accepted & ~offered == 0 else { throw .invalid("device '\(name)': accepted features \(hex(accepted)) were not offered") }
        let newStatus = try input.u8(), generation = try input.u8(), newIsr = try input.u8()
        let deviceSelect = try input.u32(), driverSelect = try input.u32()
        let select = try input.u16(), vector = try input.u16()
        let image = try input.blob(limit: PciConfigSpace.size)
        guard image.count == PciConfigSpace.size else { throw .invalid("device '\(name)': PCI image of \(image.count) bytes") }
        let msixEnabled = try input.bool(), msixMasked = try input.bool()
        let vectorCount = try input.u32()
        guard vectorCount == UInt32(msix.vectorCount) else {
            throw .mismatch("device '\(name)' has \(msix.vectorCount) MSI-X vectors, the snapshot has \(vectorCount)")
        }
        var entries: [Msix.Entry] = [], pending: [Bool] = []
        for _ in 0..<vectorCount {
            entries.append(Msix.Entry(addressLow: try input.u32(), addressHigh: try input.u32(), data: try input.u32(),
                                      control: try input.u32()))
            pending.append(try input.bool())
        }
        let queueCount = try input.u32()
        guard queueCount == UInt32(queues.count) else {
            throw .mismatch("device '\(name)' has \(queues.count) queues, the snapshot has \(queueCount)")
        }
        var restored: [SplitQueue] = [], owed: [Bool] = []
        for index in 0..<Int(queueCount) {
            var queue = SplitQueue()
            queue.size = try input.u16()
            queue.ready = try input.bool()
            queue.descriptorTable = GuestAddress(try input.u64())
            queue.availableRing = GuestAddress(try input.u64())
            queue.usedRing = GuestAddress(try input.u64())
            queue.msixVector = try input.u16()
            queue.eventIndex = try input.bool()
            queue.indirectDescriptors = try input.bool()
            queue.nextAvailable = try input.u16()
            queue.nextUsed = try input.u16()
            queue.signalledUsed = try input.u16()
            queue.signalledValid = try input.bool()
            owed.append(try input.bool())
            if queue.ready {
                do {
                    try queue.validate(memory: memory)
                } catch {
                    throw .invalid("device '\(name)' queue \(index): \(error)")
                }
            }
            restored.append(queue)
        }
        let backendState = try input.blob()
        try input.finish()
        try backend.restoreState(backendState)

        // Everything checked: apply.
        quiesced = true
        acceptedFeatures = accepted
        status = newStatus
        configGeneration = generation
        isr = newIsr
        deviceFeatureSelect = deviceSelect
        driverFeatureSelect = driverSelect
        queueSelect = select
        configVector = Int(vector) < msix.vectorCount ? vector : Self.noVector
        config.restoreWritable(image)
        msix.restore(entries: entries, pending: pending, enabled: msixEnabled, functionMasked: msixMasked)
        queues = restored
        unsignalled = owed
        // Look at every ready queue once on resume: requests posted before the snapshot get served.
        pendingDoorbells = restored.map(\.ready)
    }
}
