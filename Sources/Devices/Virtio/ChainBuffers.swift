import ActorVmm

/// The buffers of one popped request, in storage a device keeps from request to request: popping with
/// ``SplitQueue/pop(memory:into:)`` or ``VirtioPciDevice/drain(queue:into:_:)`` empties and refills it
/// without allocating once it has grown to the longest chain seen (a ``DescriptorChain`` builds two new
/// arrays per request instead). The head index stands for the request: complete it exactly once with
/// ``VirtioPciDevice/complete(head:queue:written:)``.
public struct ChainBuffers {
    public internal(set) var readable: [GuestBuffer] = []
    public internal(set) var writable: [GuestBuffer] = []

    public init() {}

    mutating func removeAll() {
        readable.removeAll(keepingCapacity: true)
        writable.removeAll(keepingCapacity: true)
    }

    public var readableLength: Int { readable.reduce(0) { $0 + Int($1.length) } }
    public var writableLength: Int { writable.reduce(0) { $0 + Int($1.length) } }
}
