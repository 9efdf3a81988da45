import ActorVmm
import EpollLoop
import Glibc

/// Receive: frames go from a pair's TAP queue straight into the guest's receive buffers with one `readv`
/// each — the `virtio_net_hdr` the TAP writes included (its checksum and GSO fields describe the frame);
/// the device only sets `num_buffers` (and clears the flags when the guest took no checksum offload).
///
/// - Without MRG_RXBUF a frame takes one request; with it, as many as it needs (`num_buffers` of them,
///   published together). Requests are taken off the ring ahead of time (enough for the largest frame the
///   TAP may send) and held until a frame fills them.
/// - The `readv` ends in a host buffer (``NetQueuePair/overflow``): a frame larger than the held buffers is
///   not cut. It is then gathered there and copied into buffers when the guest has posted enough, and the
///   device stops reading the TAP meanwhile (back-pressure: frames wait in the kernel's TAP queue).
/// - A buffer that is read-only, shorter than the header, or (without MRG_RXBUF) too small for the frame
///   is returned used with length 0 and counted in `rxBadBuffers`; the frame goes to the next buffer.
/// - A turn takes at most the queue size of requests, then re-queues the rest of the work; one interrupt
///   covers the batch.
extension VirtioNet {
    private enum Step { case progress, noBuffers, stop }

    func receive(_ pair: NetQueuePair, device: isolated VirtioPciDevice) {
        guard pair.watch.isWatching else { return }
        guard device.canDMA else { return pair.watch.stop(device: device) }
        let queue = pair.receiveQueue
        var budget = device.queueSize(queue)
        while true {
            guard budget > 0 else {
                device.yieldTurn(queue: queue)
                break
            }
            let step = pair.pendingLength == 0
                ? readFrame(pair, budget: &budget, device: device)
                : deliverPending(pair, budget: &budget, device: device)
            if step == .stop { break }
            if step == .noBuffers {
                if device.awaitBuffers(queue: queue) { continue }
                pair.watch.stop(device: device)  // watched again when the guest posts buffers
                break
            }
        }
        device.interruptIfNeeded(queue: queue)
    }

    /// Reads one frame from the TAP into the held requests (and the overflow buffer).
    private func readFrame(_ pair: NetQueuePair, budget: inout Int, device: isolated VirtioPciDevice) -> Step {
        gather(pair, wanting: mergeable ? (largeFrames ? Self.maxFrame : Self.standardFrame) : 1,
               budget: &budget, device: device)
        guard !pair.held.isEmpty else { return .noBuffers }
        pair.iovecs.removeAll()
        var capacity = 0, requests = 0
        for request in pair.held {
            guard pair.iovecs.append(request.writable, memory: device.memory) else { break }
            capacity += request.capacity
            requests += 1
        }
        if capacity < Self.maxFrame {
            pair.iovecs.append(host: pair.overflow.baseAddress! + capacity, count: Self.maxFrame - capacity)
        }
        let n = pair.iovecs.read(from: pair.fd)
        guard n >= 0 else {
            let error = errno
            if error == EAGAIN || error == EINTR { return .stop }  // nothing more to read
            // The TAP is gone (the interface was deleted on the host) or broken. Its error condition would
            // make epoll report it ready forever and keep the loop busy: stop watching it for good. The
            // guest sees a link that receives nothing; transmit counts drops.
            pair.failed = true
            pair.watch.stop(device: device)
            device.countError()
            Log.warning("\(device.name): TAP \(interfaceName) failed (\(Errno(rawValue: error))); no longer receiving from it")
            return .stop
        }
        guard n >= Self.headerSize, n <= pair.iovecs.byteCount else {
            // Not even a header, or cut (the TAP reports the whole length): the host side's fault. The held
            // buffers stay held for the next frame.
            rxDropped &+= 1
            device.countDropped()
            budget -= 1
            return .progress
        }
        if n <= capacity {
            if !guestChecksum {
                // §5.1.6.4.1: without GUEST_CSUM the flags are 0 (the TAP may have set DATA_VALID).
                withUnsafeBytes(of: UInt8(0)) { pair.held[0].writable.write($0, at: 0, memory: device.memory) }
            }
            completeFrame(pair, length: n, device: device)
            return .progress
        }
        // Longer than the held buffers: bring its start back next to the rest, in the overflow buffer.
        var offset = 0
        for request in pair.held.prefix(requests) {
            for buffer in request.writable {
                let part = UnsafeMutableRawBufferPointer(rebasing: pair.overflow[offset..<(offset + Int(buffer.length))])
                try? device.memory.read(into: part, at: buffer.address)
                offset += Int(buffer.length)
            }
        }
        pair.pendingLength = n
        return .progress
    }

    /// Copies the frame waiting in the overflow buffer into receive buffers.
    private func deliverPending(_ pair: NetQueuePair, budget: inout Int, device: isolated VirtioPciDevice) -> Step {
        let length = pair.pendingLength, queue = pair.receiveQueue
        gather(pair, wanting: mergeable ? length : 1, budget: &budget, device: device)
        guard let first = pair.held.first else { return .noBuffers }
        if !mergeable && first.capacity < length {
            pair.held.removeFirst()
            rxBadBuffers &+= 1
            device.countError()
            device.addUsed(first, queue: queue, written: 0)
            device.publishUsed(queue: queue)
            return .progress
        }
        if pair.heldCapacity < length {
            // Every buffer the ring can hold is held and the frame still does not fit: it never will.
            guard pair.held.count >= device.queueSize(queue) else { return .noBuffers }
            pair.pendingLength = 0
            rxDropped &+= 1
            device.countDropped()
            return .progress
        }
        if !guestChecksum { pair.overflow[0] = 0 }
        var offset = 0
        scatter: for request in pair.held {
            for buffer in request.writable {
                let take = min(Int(buffer.length), length - offset)
                if take == 0 { break scatter }
                try? device.memory.write(bytes: UnsafeRawBufferPointer(rebasing: pair.overflow[offset..<(offset + take)]),
                                         at: buffer.address)
                offset += take
            }
        }
        completeFrame(pair, length: length, device: device)
        pair.pendingLength = 0
        return .progress
    }

    /// Returns the held requests that hold a frame of `length` bytes (already in them) to the driver,
    /// with `num_buffers` set, all published at once.
    private func completeFrame(_ pair: NetQueuePair, length: Int, device: isolated VirtioPciDevice) {
        var remaining = length, count = 0
        while remaining > 0 && count < pair.held.count {
            remaining -= min(pair.held[count].capacity, remaining)
            count += 1
        }
        withUnsafeBytes(of: UInt16(count).littleEndian) {
            pair.held[0].writable.write($0, at: 10, memory: device.memory)
        }
        remaining = length
        for request in pair.held.prefix(count) {
            let take = min(request.capacity, remaining)
            device.addUsed(request, queue: pair.receiveQueue, written: UInt32(take))
            remaining -= take
        }
        pair.held.removeFirst(count)
        device.publishUsed(queue: pair.receiveQueue)
        rxFrames &+= 1
    }

    /// Takes receive requests off the ring until the held ones can take `wanting` bytes (without
    /// MRG_RXBUF: until one is held), the ring is empty or the budget spent. A request with a read-only
    /// part, shorter than the header, or in more pieces than `readv` takes is returned unused and counted.
    private func gather(_ pair: NetQueuePair, wanting: Int, budget: inout Int, device: isolated VirtioPciDevice) {
        var capacity = pair.heldCapacity
        while mergeable ? capacity < wanting : pair.held.isEmpty {
            guard let chain = device.popRequest(queue: pair.receiveQueue, budget: &budget) else { return }
            guard chain.readable.isEmpty, chain.writableLength >= Self.headerSize,
                  chain.writable.count < IovecList.limit else {
                rxBadBuffers &+= 1
                device.countError()
                device.complete(chain, queue: pair.receiveQueue, written: 0)
                continue
            }
            let request = HeldRequest(chain)
            pair.held.append(request)
            capacity += request.capacity
        }
    }
}
