import ActorVmm
import Glibc

/// Transmit: every request of a transmitq (a `virtio_net_hdr`, then the frame, over any number of
/// buffers) goes to the pair's TAP queue with one `writev` straight from guest memory — the header too: the
/// TAP reads its checksum and segmentation fields (IFF_VNET_HDR), so a guest's TSO frame leaves as one
/// write. All requests waiting are served in one turn (up to the queue size, see
/// ``VirtioPciDevice/drain(queue:_:)``) and answered with one interrupt.
extension VirtioNet {
    func transmit(_ pair: NetQueuePair, device: isolated VirtioPciDevice) {
        // A pair the driver does not use (or whose TAP queue failed) sends through the first one.
        let target = pair.attached && !pair.failed ? pair : pairs[0]
        device.drain(queue: pair.transmitQueue) { chain in
            let length = chain.readableLength
            pair.iovecs.removeAll()
            if length < Self.headerSize || length > Self.maxFrame || target.failed
                || !pair.iovecs.append(chain.readable, memory: device.memory) {
                // No header, larger than any frame, more pieces than writev takes, or no TAP: dropped.
                txDropped &+= 1
                device.countDropped()
            } else {
                let written = pair.iovecs.write(to: target.fd)
                if written == length {
                    txFrames &+= 1
                    device.countRead(length)
                } else {
                    // EINVAL: a header the kernel refuses (a bad checksum offset, a GSO size it cannot
                    // segment); EIO or EAGAIN: the TAP is down or full. Counted, as a NIC counts tx drops.
                    txDropped &+= 1
                    device.countDropped()
                }
            }
            device.complete(chain, queue: pair.transmitQueue, written: 0)
            return true
        }
    }
}
