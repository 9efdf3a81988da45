import ActorVmm
import EpollLoop

/// Pause and snapshot (docs/snapshot.md) for virtio-net: quiesced, no TAP queue is read (frames wait in
/// the kernel's queue); receive requests held across turns go back to the ring (the driver posted them and
/// nothing was written into them yet), so the snapshot's ring indices cover every buffer the guest gave.
extension VirtioNet {
    public func quiesce(device: isolated VirtioPciDevice) {
        for pair in pairs {
            pair.watch.stop(device: device)
            // Held requests are the queue's latest pops, in ring order, still unused: un-pop them. A frame
            // waiting for buffers is wholly in the pair's overflow buffer, not in them.
            if !pair.held.isEmpty {
                device.queues[pair.receiveQueue].nextAvailable &-= UInt16(truncatingIfNeeded: pair.held.count)
                pair.held.removeAll()
            }
        }
    }

    /// After a pause or a restore: the negotiated receive mode and the TAP's offloads (a restored device
    /// runs on a TAP this process opened), then the active pairs' TAP queues are read again.
    public func resume(device: isolated VirtioPciDevice) {
        guard device.isActive else { return }
        if !isQueueWorker {  // a worker has these from its device (queueWorkerSettings)
            let features = device.negotiatedFeatures
            mergeable = features & NetFeature.mergeableRxBuffers != 0
            guestChecksum = features & NetFeature.guestCsum != 0
            largeFrames = NetFeature.receivesLargeFrames(features)
        }
        if let flags = restoredOffloads {
            restoredOffloads = nil
            if let error = applyOffloads(flags) { Log.warning("\(device.name): cannot set the TAP's offloads: \(error)") }
        }
        for pair in servedPairs where pair.index < activePairs {
            watchTap(pair, device: device)
            receive(pair, device: device)
        }
    }

    /// Active pairs, the TAP offloads in force, and per pair the frame read from the TAP and not yet
    /// delivered (blob; empty: none).
    public func captureState() -> [UInt8] {
        var out = SnapshotEncoder()
        out.u32(UInt32(activePairs))
        out.u32(tapOffloads)
        out.u32(UInt32(pairs.count))
        for pair in pairs {
            out.blob(pair.pendingLength > 0 ? Array(pair.overflow[0..<pair.pendingLength]) : [])
        }
        return out.bytes
    }

    public func restoreState(_ bytes: [UInt8]) throws(SnapshotError) {
        var input = SnapshotDecoder(bytes, context: "net backend")
        let active = Int(try input.u32())
        let offloads = try input.u32()
        let count = Int(try input.u32())
        guard count == pairs.count else {
            throw .mismatch("net device has \(pairs.count) queue pair(s), the snapshot has \(count)")
        }
        guard (1...count).contains(active) else { throw .invalid("net backend: \(active) active pairs of \(count)") }
        var pending: [[UInt8]] = []
        for index in 0..<count {
            let frame = try input.blob(limit: Self.maxFrame)
            guard frame.isEmpty || frame.count >= Self.headerSize else {
                throw .invalid("net backend: pair \(index)'s pending frame of \(frame.count) bytes")
            }
            pending.append(frame)
        }
        try input.finish()
        for (pair, frame) in zip(pairs, pending) {
            pair.held.removeAll()
            pair.pendingLength = frame.count
            if !frame.isEmpty { pair.overflow.copyBytes(from: frame) }
        }
        setActivePairs(active)
        restoredOffloads = offloads
    }
}
