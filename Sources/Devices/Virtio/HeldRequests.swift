import ActorVmm

/// A receive request a device took off its queue and keeps across turns until data fills it: the head to
/// complete it with and its device-writable buffers. Unlike ``DescriptorChain`` it is copyable (so a
/// device can keep several in an array); the device completes each one exactly once, with
/// ``VirtioPciDevice/addUsed(_:queue:written:)``, or forgets it at reset.
struct HeldRequest {
    let head: UInt16
    let writable: [GuestBuffer]
    /// Bytes it can take.
    let capacity: Int

    init(_ chain: borrowing DescriptorChain) {
        head = chain.head
        writable = chain.writable
        capacity = chain.writableLength
    }
}

extension VirtioPciDevice {
    /// Puts `request` on queue `index`'s used ring with `written` bytes, unpublished until
    /// ``publishUsed(queue:)`` (no interrupt either: see ``interruptIfNeeded(queue:)``).
    func addUsed(_ request: HeldRequest, queue index: Int, written: UInt32) {
        counters.bytesWritten &+= UInt64(written)
        do {
            try queues[index].addUsed(head: request.head, written: written, memory: memory)
            unsignalled[index] = true
            recorder?.record(.completed, queue: UInt16(index))
        } catch {
            counters.errors &+= 1
            failDevice()
        }
    }

    /// Makes the used entries added with ``addUsed(_:queue:written:)`` visible to the driver.
    func publishUsed(queue index: Int) {
        do {
            try queues[index].publishUsed(memory: memory)
        } catch {
            counters.errors &+= 1
            failDevice()
        }
    }
}

extension [GuestBuffer] {
    /// Writes `bytes` at byte `offset` of these buffers taken as one (a header may be split over several);
    /// what does not fit is left out.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int, memory: GuestMemory) {
        var skip = offset, done = 0
        for buffer in self where done < bytes.count {
            let length = Int(buffer.length)
            if skip >= length { skip -= length; continue }
            let take = Swift.min(length - skip, bytes.count - done)
            try? memory.write(bytes: UnsafeRawBufferPointer(rebasing: bytes[done..<(done + take)]),
                              at: buffer.address.adding(UInt64(skip)))
            done += take
            skip = 0
        }
    }
}
