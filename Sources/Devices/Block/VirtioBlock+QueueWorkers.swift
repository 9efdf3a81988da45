/// Per-queue placement for virtio-blk (docs/devices.md "Queue workers"): each queue is served by a queue
/// worker on its own loop with a ``VirtioBlock`` of its own over the same image — its own io_uring, in-flight
/// slots and buffers — so that nothing of the request path is shared between threads. The device's own
/// backend serves no queue (it answers the configuration space): it needs no ring.
extension VirtioBlock.Opened {
    /// The same image for a per-queue device's own backend: synchronous engine, so no io_uring is set up.
    public var forDeviceWithQueueWorkers: Self {
        var options = options
        options.engine = .sync
        return Self(file: file, options: options, capacitySectors: capacitySectors, idBytes: idBytes)
    }

    /// The same image for a backend whose loop no other device shares (`per-device`, a queue worker).
    public var onLoopOfItsOwn: Self {
        var options = options
        options.loopOfItsOwn = true
        return Self(file: file, options: options, capacitySectors: capacitySectors, idBytes: idBytes)
    }

    /// The number of queues (one worker each).
    public var queueCount: Int { options.numQueues }
}
