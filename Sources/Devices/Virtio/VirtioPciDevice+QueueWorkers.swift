import ActorVmm
import EpollLoop

/// What a device has told its queue workers: whether they may touch guest memory (Bus Master Enable) and which
/// MSI-X vectors they may trigger themselves (enabled, unmasked). On a worker, what it was told last.
struct WorkerView: Sendable, Equatable {
    var mayDMA = false
    var deliverable: [Bool] = []
}

/// The served queues' state as a device hands it to a queue worker (DRIVER_OK, resume) or a worker hands it
/// back (quiesce): ring addresses and indices, the interrupt owed, a doorbell noted while quiesced, and the
/// backend's share of the state for this group (see ``VirtioDeviceModel/takeQueueGroupState(_:)``).
struct QueueHandOff: Sendable {
    struct Queue: Sendable {
        let index: Int
        let queue: SplitQueue
        let unsignalled: Bool
        let doorbell: Bool
    }
    var queues: [Queue]
    var backendState: [UInt8]
    var status: UInt8 = 0
    var features: UInt64 = 0
    var settings: [UInt8] = []
    var view = WorkerView()
}

/// Per-queue placement (`--event-loops per-queue`, docs/devices.md "Queue workers"): a device's queues are
/// served by queue workers, one actor per queue group (a virtio-blk queue, a virtio-net queue pair), each on
/// an event loop of its own — the same actor type in a worker's role, with a backend of its own. The device
/// keeps the registers and all device-wide state (status, features, MSI-X, the queues' configuration while the
/// driver sets them up, the net control queue); a worker owns its queues' state from DRIVER_OK until a reset,
/// a quiesce or a stop. They share nothing mutable: every hand-off is a message to the other actor's loop.
///
/// - Device → worker, in order on the worker's loop (``tell(_:_:)``, FIFO): start (``QueueHandOff``, at
///   DRIVER_OK and on resume), reset (the worker answers when done: the device's status reads back 0 only
///   then, so a driver that waits for it, as virtio requires, never races a worker still writing the old rings),
///   new ``WorkerView`` (BME, MSI-X masks), new backend settings (net: active pairs, receive offloads).
/// - Device → worker, awaited: quiesce and hand back (snapshot, migration), stop (detach, teardown).
/// - Worker → device: an interrupt on a vector the worker was told is masked (the device marks it pending),
///   and DEVICE_NEEDS_RESET. A vector masked while the news is on its way may still fire once: as an MSI
///   already in flight when the guest masks it.
extension VirtioPciDevice {
    /// Runs `body` inside `target` on its loop, after the messages already sent to it.
    nonisolated func tell(_ target: VirtioPciDevice, _ body: @escaping @Sendable (isolated VirtioPciDevice) -> Void) {
        target.loop.execute { target.assumeIsolated { body($0) } }
    }

    /// True if this actor watches queue `index`'s doorbell: a worker its own queues, a device those no
    /// worker serves.
    func servesDoorbell(_ index: Int) -> Bool {
        coordinator == nil ? workerOfQueue[index] == nil : servedQueues.contains(index)
    }

    /// Makes `workers` (built with this device as coordinator) serve their queues; before ``watchDoorbells()``.
    public func adopt(workers: [VirtioPciDevice]) {
        precondition(coordinator == nil && self.workers.isEmpty, "workers are adopted once, by a device")
        self.workers = workers
        for (number, worker) in workers.enumerated() {
            for index in worker.servedQueues { workerOfQueue[index] = number }
        }
    }

    /// The queue workers (empty unless per-queue placement).
    public var queueWorkers: [VirtioPciDevice] { workers }

    /// Counters of the device and its workers together (`vm.counters`).
    public func totalCounters() async -> VirtioCounters {
        var total = counters
        for worker in workers {
            let c = await worker.counters
            total.notifications &+= c.notifications
            total.requests &+= c.requests
            total.bytesRead &+= c.bytesRead
            total.bytesWritten &+= c.bytesWritten
            total.errors &+= c.errors
            total.interrupts &+= c.interrupts
            total.dropped &+= c.dropped
        }
        return total
    }

    // MARK: - Device side

    /// The status a driver reads: until every worker has confirmed a reset, the status before it.
    var reportedStatus: UInt8 { resetsOutstanding > 0 ? statusBeforeReset : status }

    /// The hand-off for worker `number`: its queues as the device has them, doorbells noted (or, at DRIVER_OK,
    /// every ready queue: requests posted before it are served), the device-wide values.
    func handOff(to number: Int, doorbells: (Int) -> Bool) -> QueueHandOff {
        let served = workers[number].servedQueues
        let handOff = QueueHandOff(
            queues: served.map { .init(index: $0, queue: queues[$0], unsignalled: unsignalled[$0], doorbell: doorbells($0)) },
            backendState: backend.takeQueueGroupState(number), status: status, features: acceptedFeatures,
            settings: backend.queueWorkerSettings(), view: currentWorkerView())
        for index in served { unsignalled[index] = false }
        return handOff
    }

    /// DRIVER_OK: the workers take their queues and serve what is already posted.
    func startWorkers() {
        workerView = currentWorkerView()
        for (number, worker) in workers.enumerated() {
            let handOff = handOff(to: number) { self.queues[$0].ready }
            tell(worker) { $0.takeQueues(handOff) }
        }
    }

    /// Device reset: each worker stops serving, waits for its I/O and forgets its queues, then says so.
    func resetWorkers(statusBefore: UInt8) {
        guard !workers.isEmpty, statusBefore & Self.driverOK != 0 else { return }
        statusBeforeReset = statusBefore
        resetsOutstanding += workers.count
        let device = self
        for worker in workers {
            tell(worker) { worker in
                worker.reset()
                worker.tell(device) { $0.resetsOutstanding -= 1 }
            }
        }
    }

    /// After a configuration or MSI-X write: tells the workers if BME or a vector's mask changed.
    func updateWorkerView() {
        guard !workers.isEmpty else { return }
        let view = currentWorkerView()
        guard view != workerView else { return }
        workerView = view
        for worker in workers { tell(worker) { $0.workerView = view; $0.serveAfterDMAReturned() } }
    }

    func currentWorkerView() -> WorkerView {
        WorkerView(mayDMA: config.busMaster, deliverable: (0..<msix.vectorCount).map { !msix.isMasked($0) })
    }

    /// A backend changed device-wide settings its workers' backends follow (net: active pairs, offloads).
    public func queueWorkerSettingsChanged() {
        guard !workers.isEmpty else { return }
        let settings = backend.queueWorkerSettings()
        for worker in workers { tell(worker) { $0.backend.applyQueueWorkerSettings(settings, device: $0) } }
    }

    /// Quiesce: each worker stops serving (its backend finishes what is in flight) and hands its queues back.
    func quiesceWorkers() async {
        for (number, worker) in workers.enumerated() {
            guard let back = await worker.handBackQueues() else { continue }
            absorb(back, from: number)
        }
    }

    /// Resume: an active device hands the workers their queues again (with what the snapshot restored).
    func resumeWorkers() async {
        guard isActive else { return }
        workerView = currentWorkerView()
        for (number, worker) in workers.enumerated() {
            let handOff = handOff(to: number) { self.pendingDoorbells[$0] }
            for index in worker.servedQueues { pendingDoorbells[index] = false }
            await worker.takeQueues(handOff)
        }
    }

    func stopWorkers() async {
        for worker in workers { await worker.stop() }
        workers.removeAll()
        workerOfQueue = Array(repeating: nil, count: queues.count)
    }

    private func absorb(_ back: QueueHandOff, from number: Int) {
        for queue in back.queues {
            queues[queue.index] = queue.queue
            unsignalled[queue.index] = unsignalled[queue.index] || queue.unsignalled
            pendingDoorbells[queue.index] = pendingDoorbells[queue.index] || queue.doorbell
        }
        backend.giveQueueGroupState(number, back.backendState)
    }

    /// An interrupt a worker could not deliver itself (its vector masked, as far as it knew).
    func raiseForWorker(vector: UInt16) {
        if !msix.enabled { isr |= 1 }
        msix.signal(Int(vector))
    }

    // MARK: - Worker side

    /// Takes the queues (and the device-wide values) and serves: what a resume does, with the hand-off's
    /// doorbells noted.
    func takeQueues(_ handOff: QueueHandOff) {
        for queue in handOff.queues {
            queues[queue.index] = queue.queue
            unsignalled[queue.index] = queue.unsignalled
            pendingDoorbells[queue.index] = pendingDoorbells[queue.index] || queue.doorbell
        }
        status = handOff.status
        acceptedFeatures = handOff.features
        workerView = handOff.view
        holdsQueues = true
        backend.giveQueueGroupState(0, handOff.backendState)
        backend.applyQueueWorkerSettings(handOff.settings, device: self)
        quiesced = true
        resumeServing()
    }

    /// Quiesces (the backend completes what is in flight) and gives the queues back; nil if it holds none.
    /// The worker stays quiesced: a doorbell from now on is noted, and handed back with the next hand-off's.
    func handBackQueues() -> QueueHandOff? {
        quiesceServing()
        guard holdsQueues else { return nil }
        holdsQueues = false
        let back = QueueHandOff(
            queues: servedQueues.map { .init(index: $0, queue: queues[$0], unsignalled: unsignalled[$0], doorbell: pendingDoorbells[$0]) },
            backendState: backend.takeQueueGroupState(0))
        for index in servedQueues {
            unsignalled[index] = false
            pendingDoorbells[index] = false
        }
        status = 0
        return back
    }

    /// BME came back on: serve what was posted meanwhile.
    func serveAfterDMAReturned() {
        guard canDMA, !quiesced else { return }
        for index in servedQueues where queues[index].ready { backend.queueNotified(index, device: self) }
    }

    /// Triggers `vector` directly when the device said it is deliverable; else the device decides.
    func raiseFromWorker(vector: UInt16) {
        let index = Int(vector)
        if index < workerView.deliverable.count && workerView.deliverable[index] {
            msix.targets[index].trigger()
            recorder?.record(.interrupt, queue: vector)
        } else if let coordinator {
            tell(coordinator) { $0.raiseForWorker(vector: vector) }
        }
    }

    /// DEVICE_NEEDS_RESET is the device's: this worker stops serving, the device sets it.
    func failFromWorker() {
        status |= Self.needsReset
        if let coordinator { tell(coordinator) { $0.failDevice() } }
    }
}
