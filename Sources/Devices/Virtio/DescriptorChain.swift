import ActorVmm

/// One guest buffer of a request.
public struct GuestBuffer: Equatable, Sendable {
    public let address: GuestAddress
    public let length: UInt32
}

/// A validated request popped from a virtqueue: its device-readable buffers, then its device-writable ones.
///
/// Validation happened in ``SplitQueue/pop(memory:)``: every buffer lies in guest RAM, the chain has no loop,
/// readable buffers come first. The guest may still change the *contents* of the buffers at any time, so
/// device code copies what it parses. `~Copyable`: a chain is completed exactly once, by
/// ``SplitQueue/complete(_:written:memory:)``, which consumes it.
public struct DescriptorChain: ~Copyable {
    public let head: UInt16
    public let readable: [GuestBuffer]
    public let writable: [GuestBuffer]

    public var readableLength: Int { readable.reduce(0) { $0 + Int($1.length) } }
    public var writableLength: Int { writable.reduce(0) { $0 + Int($1.length) } }

    /// Copies up to `count` readable bytes starting at byte `offset` of the readable part.
    public func readBytes(offset: Int = 0, count: Int, memory: GuestMemory) throws(QueueError) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count)
        var skip = offset
        for buffer in readable where result.count < count {
            let length = Int(buffer.length)
            if skip >= length { skip -= length; continue }
            let take = min(length - skip, count - result.count)
            do {
                result += try memory.readBytes(at: GuestAddress(buffer.address.rawValue + UInt64(skip)), count: take)
            } catch {
                throw .memory(error)
            }
            skip = 0
        }
        return result
    }

    /// Copies `bytes` into the writable part starting at byte `offset`; returns how many fitted.
    @discardableResult
    public func writeBytes(_ bytes: [UInt8], offset: Int = 0, memory: GuestMemory) throws(QueueError) -> Int {
        var done = 0
        var skip = offset
        for buffer in writable where done < bytes.count {
            let length = Int(buffer.length)
            if skip >= length { skip -= length; continue }
            let take = min(length - skip, bytes.count - done)
            do {
                try memory.write(bytes: Array(bytes[done..<(done + take)]), at: GuestAddress(buffer.address.rawValue + UInt64(skip)))
            } catch {
                throw .memory(error)
            }
            done += take
            skip = 0
        }
        return done
    }

    /// The writable buffers after the first `offset` bytes (to hand to a scatter/gather system call).
    public func writableSlices(from offset: Int) -> [GuestBuffer] {
        slices(writable, from: offset)
    }

    /// The readable buffers after the first `offset` bytes.
    public func readableSlices(from offset: Int) -> [GuestBuffer] {
        slices(readable, from: offset)
    }

    private func slices(_ buffers: [GuestBuffer], from offset: Int) -> [GuestBuffer] {
        var skip = offset
        var result: [GuestBuffer] = []
        for buffer in buffers {
            let length = Int(buffer.length)
            if skip >= length { skip -= length; continue }
            result.append(GuestBuffer(address: GuestAddress(buffer.address.rawValue + UInt64(skip)), length: UInt32(length - skip)))
            skip = 0
        }
        return result
    }
}
