import ActorVmm

/// One receive/transmit queue pair of a virtio-net device and the TAP queue behind it (virtio 1.2
/// §5.1.2: pair *i* is receiveq *2i* and transmitq *2i+1*). Lives in its ``VirtioNet``, inside the
/// device actor.
final class NetQueuePair {
    let index: Int
    /// The TAP queue's descriptor (owned by the backend's ``TapDevice``).
    let fd: Int32
    var watch: HostWatch
    /// The TAP queue is attached (TUNSETQUEUE): the kernel steers frames to it.
    var attached = true
    /// The TAP failed for good (deleted on the host: reads fail with EBADFD); it is no longer watched.
    var failed = false
    /// Receive buffers taken off the ring and not yet filled, in ring order.
    var held: [HeldRequest] = []
    /// Bytes of a frame waiting in ``overflow`` for buffers (0: none).
    var pendingLength = 0
    /// Where a frame lands that the held buffers cannot take (and waits there until buffers come).
    /// Allocated on first use: most frames go straight into guest buffers.
    private var overflowStorage: UnsafeMutableRawBufferPointer?
    var iovecs = IovecList()

    var receiveQueue: Int { 2 * index }
    var transmitQueue: Int { 2 * index + 1 }
    var heldCapacity: Int { held.reduce(0) { $0 + $1.capacity } }

    init(index: Int, fd: Int32) {
        self.index = index
        self.fd = fd
        watch = HostWatch(fd: fd, token: index)
    }

    deinit { overflowStorage?.deallocate() }

    var overflow: UnsafeMutableRawBufferPointer {
        if let overflowStorage { return overflowStorage }
        // Not initialised: the kernel (readv) or a copy writes the bytes before anything reads them.
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: VirtioNet.maxFrame, alignment: 64)
        overflowStorage = storage
        return storage
    }

    /// Back to the state after open: nothing held, nothing pending (device reset).
    func reset(device: isolated VirtioPciDevice) {
        watch.stop(device: device)
        held.removeAll()
        pendingLength = 0
    }
}
