import ActorVmm
import EpollLoop

/// How backends take requests from their queues and give them back: pop, complete, put back, interrupt —
/// and the rules that keep a hostile driver from hurting anyone but itself:
///
/// - a malformed request is returned on the used ring with length 0 (the driver's request completes, as
///   with Firecracker and Cloud Hypervisor); a corrupt ring sets DEVICE_NEEDS_RESET;
/// - one turn serves at most as many requests as the queue holds, then re-queues the rest of the work on
///   the device's loop (the doorbell eventfd), so other devices on a shared loop get their turn;
/// - the warnings a guest causes go through one rate limiter per device.
extension VirtioPciDevice {
    /// Pops the next request of queue `index`, or nil. A malformed request is returned to the driver with
    /// length 0 and counted; a corrupt ring sets DEVICE_NEEDS_RESET. After as many malformed requests as
    /// the queue holds, the rest waits for the next turn (re-queued, see ``yieldTurn(queue:)``).
    public func popRequest(queue index: Int) -> DescriptorChain? {
        var budget = queueSize(index)
        let chain = popRequest(queue: index, budget: &budget)
        if chain == nil && budget == 0 && hasPendingRequests(queue: index) { yieldTurn(queue: index) }
        return chain
    }

    /// ``popRequest(queue:)`` charging every request it takes off the ring, good or malformed, to `budget`;
    /// nil when the ring is empty or the budget is spent.
    func popRequest(queue index: Int, budget: inout Int) -> DescriptorChain? {
        var buffers = ChainBuffers()
        guard let head = popRequest(queue: index, budget: &budget, into: &buffers) else { return nil }
        return DescriptorChain(head: head, readable: buffers.readable, writable: buffers.writable)
    }

    /// ``popRequest(queue:budget:)`` into reused storage (no allocation per request): the request's
    /// buffers go to `buffers`, its head is returned.
    func popRequest(queue index: Int, budget: inout Int, into buffers: inout ChainBuffers) -> UInt16? {
        while canDMA && budget > 0 {
            budget -= 1
            do {
                guard let head = try queues[index].pop(memory: memory, into: &buffers) else {
                    budget += 1  // nothing taken
                    return nil
                }
                counters.requests &+= 1
                return head
            } catch {
                counters.errors &+= 1
                Log.guestWarning(&guestLog, source: name, "queue \(index): \(error)")
                if error.breaksTheRing {
                    failDevice()
                    return nil
                }
                if case .rejectedChain(let head, _) = error { returnUnused(head: head, queue: index) }
            }
        }
        return nil
    }

    /// Serves queue `index`: `serve` gets each request and completes it (or puts it back and returns false
    /// to stop early). At most the queue size of requests per call, malformed ones included (Cloud
    /// Hypervisor's cap): if more are waiting, the rest is re-queued on the loop behind other ready work
    /// instead of served now. With EVENT_IDX the driver is asked to notify again, and the queue is checked
    /// once more after that, so a request published meanwhile is not left waiting. One interrupt covers the
    /// whole batch.
    public func drain(queue index: Int, _ serve: (consuming DescriptorChain) -> Bool) {
        var buffers = ChainBuffers()
        drain(queue: index, into: &buffers) { head, buffers in
            serve(DescriptorChain(head: head, readable: buffers.readable, writable: buffers.writable))
        }
    }

    /// ``drain(queue:_:)`` into reused storage: `serve` gets each request's head and buffers (valid until
    /// it returns) and completes the head with ``complete(head:queue:written:)`` — now or later — or puts
    /// nothing back and returns false to stop early.
    public func drain(queue index: Int, into buffers: inout ChainBuffers, _ serve: (UInt16, borrowing ChainBuffers) -> Bool) {
        var budget = queueSize(index)
        serving: repeat {
            while let head = popRequest(queue: index, budget: &budget, into: &buffers) {
                guard serve(head, buffers) else { break serving }
            }
            if budget == 0 && hasPendingRequests(queue: index) {
                yieldTurn(queue: index)
                break serving
            }
            requestNotification(queue: index)
        } while hasPendingRequests(queue: index)
        interruptIfNeeded(queue: index)
    }

    /// Ends this turn of queue `index` with work left: signals the queue's doorbell eventfd, so the loop
    /// calls ``queueNotified(_:)`` again after the other descriptors that are ready (not a spin: the loop
    /// goes through `epoll_wait` first).
    public func yieldTurn(queue index: Int) {
        drainYields &+= 1
        EventFD.signalRaw(notifyFDs[index])
    }

    /// Returns a request with `written` bytes to the driver (no interrupt yet: see ``interruptIfNeeded``).
    public func complete(_ chain: consuming DescriptorChain, queue index: Int, written: UInt32) {
        complete(head: chain.head, queue: index, written: written)
    }

    /// Returns the request `head` (popped into ``ChainBuffers``) with `written` bytes; no interrupt yet.
    public func complete(head: UInt16, queue index: Int, written: UInt32) {
        counters.bytesWritten &+= UInt64(written)
        do {
            try queues[index].complete(head: head, written: written, memory: memory)
            unsignalled[index] = true
            recorder?.record(.completed, queue: UInt16(index))
        } catch {
            counters.errors &+= 1
            failDevice()
        }
    }

    /// Returns a rejected request unused (length 0).
    func returnUnused(head: UInt16, queue index: Int) {
        do {
            try queues[index].returnUnused(head: head, memory: memory)
            unsignalled[index] = true
        } catch {
            failDevice()
        }
    }

    /// Puts a popped request back (the host side has no room for it yet).
    public func putBack(_ chain: consuming DescriptorChain, queue index: Int) {
        counters.requests &-= 1
        queues[index].undoPop(chain)
    }

    /// Sends queue `index`'s interrupt if anything was returned since the last one and the driver wants it.
    public func interruptIfNeeded(queue index: Int) {
        guard unsignalled[index] else { return }
        unsignalled[index] = false
        guard queues[index].needsInterrupt(memory: memory) else { return }
        raise(vector: queues[index].msixVector, isrBit: 1)
    }

    /// Asks the driver (EVENT_IDX) to notify again when it adds requests to queue `index`.
    public func requestNotification(queue index: Int) {
        guard canDMA else { return }
        queues[index].requestNotification(memory: memory)
    }

    /// For a receive queue that ran dry: asks the driver to notify when it posts buffers (EVENT_IDX), then
    /// looks once more. True if buffers arrived meanwhile (go on); false to wait for the doorbell.
    public func awaitBuffers(queue index: Int) -> Bool {
        requestNotification(queue: index)
        return hasPendingRequests(queue: index)
    }

    /// True if queue `index` has requests we have not popped.
    public func hasPendingRequests(queue index: Int) -> Bool {
        canDMA && queues[index].hasPending(memory: memory)
    }

    /// The size the driver chose for queue `index` (the most requests one turn serves).
    public func queueSize(_ index: Int) -> Int { Int(queues[index].size) }
}
