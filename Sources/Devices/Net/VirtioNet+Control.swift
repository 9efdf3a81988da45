import ActorVmm

/// The control queue (virtio 1.2 §5.1.6.5), the last queue: each request is `class` and `command` bytes
/// and the command's data (device-readable), then one `ack` byte (device-writable): VIRTIO_NET_OK (0) or
/// VIRTIO_NET_ERR (1).
///
/// - `MQ` / `VQ_PAIRS_SET` (4, 0; with MQ): use pairs 1…N; the TAP queues of the others are detached.
/// - `GUEST_OFFLOADS` / `SET` (5, 0; with CTRL_GUEST_OFFLOADS): the guest offloads (a subset of those
///   acked) become the TAP's offloads.
/// - `RX` mode switches (0, 0…5) and `VLAN` add/delete (2, 0–1) are answered OK and ignored, as by Cloud
///   Hypervisor (the device filters nothing).
/// - Anything else is answered ERR; a request without room for the ack is returned unused. Both counted.
extension VirtioNet {
    static let controlOK: UInt8 = 0, controlError: UInt8 = 1

    func serveControl(device: isolated VirtioPciDevice) {
        let queue = controlQueue
        device.drain(queue: queue) { chain in
            let readable = chain.readableLength
            guard chain.writableLength >= 1, readable >= 2,
                  let bytes = try? chain.readBytes(count: min(readable, 16), memory: device.memory) else {
                controlErrors &+= 1
                device.countError()
                device.complete(chain, queue: queue, written: 0)
                return true
            }
            let ack = command(class: bytes[0], bytes[1], data: Array(bytes.dropFirst(2)), device: device)
            if ack != Self.controlOK {
                controlErrors &+= 1
                device.countError()
                Log.guestWarning(&device.guestLog, source: device.name, "control command \(bytes[0]).\(bytes[1]) refused")
            }
            _ = try? chain.writeBytes([ack], memory: device.memory)
            device.complete(chain, queue: queue, written: 1)
            return true
        }
    }

    private func command(class kind: UInt8, _ command: UInt8, data: [UInt8], device: isolated VirtioPciDevice) -> UInt8 {
        let features = device.negotiatedFeatures
        switch (kind, command) {
        case (4, 0):  // VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
            guard features & NetFeature.multiQueue != 0, data.count >= 2 else { return Self.controlError }
            let count = Int(data[0]) | Int(data[1]) << 8
            guard (1...pairs.count).contains(count) else { return Self.controlError }
            usePairs(count, device: device)
            return Self.controlOK
        case (5, 0):  // VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET
            guard features & NetFeature.ctrlGuestOffloads != 0, data.count >= 8 else { return Self.controlError }
            let offloads = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            guard offloads & ~(features & NetFeature.guestOffloads) == 0 else { return Self.controlError }
            if let error = applyOffloads(NetFeature.tapOffloads(offloads)) {
                Log.warning("\(device.name): cannot set the TAP's offloads: \(error)")
                return Self.controlError
            }
            guestChecksum = offloads & NetFeature.guestCsum != 0
            largeFrames = NetFeature.receivesLargeFrames(offloads)
            device.queueWorkerSettingsChanged()
            return Self.controlOK
        case (0, 0...5), (2, 0...1):  // RX mode, VLAN filter: tolerated
            return Self.controlOK
        default:
            return Self.controlError
        }
    }

    /// Serves pairs 0..<`count` from now on: their TAP queues attached and watched, the others detached.
    func usePairs(_ count: Int, device: isolated VirtioPciDevice) {
        setActivePairs(count)
        for pair in servedPairs {
            if pair.index < count {
                watchTap(pair, device: device)
            } else {
                pair.watch.stop(device: device)
            }
        }
        device.queueWorkerSettingsChanged()
    }
}
