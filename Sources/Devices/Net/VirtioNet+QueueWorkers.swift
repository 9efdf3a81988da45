import ActorVmm

/// Per-queue placement for virtio-net (docs/devices.md "Queue workers"): each queue pair is served by a
/// queue worker on its own loop, with a ``VirtioNet`` of its own over the same TAP (``PairService/pair(_:)``);
/// the device keeps the control queue and the TAP-wide settings (offloads, attached queues) with its own
/// backend (``PairService/controlQueue``), and tells the workers what they follow: the active pairs and the
/// receive mode. A frame read from the TAP and waiting for receive buffers moves with its pair's queues
/// between worker and device (quiesce, resume), so that a snapshot has it.
extension VirtioNet {
    /// Which queue pairs a backend serves.
    public enum PairService: Sendable, Equatable {
        /// Every pair and the control queue: the device serves all its queues.
        case all
        /// The control queue only: queue workers serve the pairs.
        case controlQueue
        /// Pair `index`, for its queue worker.
        case pair(Int)
    }

    /// Active pairs and the receive mode (mergeable buffers, guest checksum, large frames).
    public func queueWorkerSettings() -> [UInt8] {
        var out = SnapshotEncoder()
        out.u32(UInt32(activePairs))
        out.bool(mergeable)
        out.bool(guestChecksum)
        out.bool(largeFrames)
        return out.bytes
    }

    public func applyQueueWorkerSettings(_ settings: [UInt8], device: isolated VirtioPciDevice) {
        guard isQueueWorker else { return }
        var input = SnapshotDecoder(settings, context: "net worker settings")
        guard let active = try? input.u32(), let merge = try? input.bool(), let checksum = try? input.bool(),
              let large = try? input.bool() else { return }
        activePairs = Int(active)
        mergeable = merge
        guestChecksum = checksum
        largeFrames = large
        for pair in pairs { pair.attached = pair.index < activePairs }  // set on the TAP by the device
        guard device.canDMA, !device.isQuiesced else { return }  // resume starts receiving
        for pair in servedPairs {
            if pair.index < activePairs {
                watchTap(pair, device: device)
                receive(pair, device: device)
            } else {
                pair.watch.stop(device: device)
            }
        }
    }

    /// The frame pair `group` (a worker: its own pair) read from the TAP and has not delivered, moved out.
    public func takeQueueGroupState(_ group: Int) -> [UInt8] {
        guard let pair = groupPair(group), pair.pendingLength > 0 else { return [] }
        let frame = Array(pair.overflow[0..<pair.pendingLength])
        pair.pendingLength = 0
        return frame
    }

    public func giveQueueGroupState(_ group: Int, _ bytes: [UInt8]) {
        guard let pair = groupPair(group), !bytes.isEmpty, bytes.count <= Self.maxFrame else { return }
        pair.overflow.copyBytes(from: bytes)
        pair.pendingLength = bytes.count
    }

    private func groupPair(_ group: Int) -> NetQueuePair? {
        if isQueueWorker { return servedPairs.first }
        return group < pairs.count ? pairs[group] : nil
    }
}

extension VirtioNet.Opened {
    /// The number of queue pairs (one queue worker each).
    public var queuePairs: Int { options.queuePairs }
}
