import ActorVmm
import CKvm
import EpollLoop
import Glibc

/// A virtio device on PCI (virtio 1.2 §4.1, modern only): the transport around a ``VirtioDeviceModel``.
///
/// One actor per device, on its event loop. Register accesses (BAR0 and configuration space) arrive from
/// vCPU threads through the exit hand-off; doorbells arrive as ioeventfds watched by the loop; interrupts
/// leave as MSI-X irqfd writes. The layout of BAR0 and the capabilities is in docs/devices.md.
public actor VirtioPciDevice: PciDevice {
    // BAR0 layout.
    public static let barSize: UInt64 = 0x8000
    static let commonOffset: UInt64 = 0x0000, commonLength: UInt64 = 0x38
    static let isrOffset: UInt64 = 0x1000
    static let deviceConfigOffset: UInt64 = 0x2000
    static let notifyOffset: UInt64 = 0x3000, notifyMultiplier: UInt32 = 4
    static let msixTableOffset: UInt64 = 0x4000
    static let msixPbaOffset: UInt64 = 0x5000
    static let noVector: UInt16 = 0xFFFF

    // Device status bits (§2.1).
    static let acknowledge: UInt8 = 1, driver: UInt8 = 2, driverOK: UInt8 = 4, featuresOK: UInt8 = 8
    static let needsReset: UInt8 = 0x40, failed: UInt8 = 0x80

    public nonisolated let loop: EventLoop
    public nonisolated let name: String
    public nonisolated let barAddress: UInt64
    public let memory: GuestMemory
    let backend: any VirtioDeviceModel

    var config: PciConfigSpace
    var msix: Msix
    let msixCapability: Int
    // `queues`, `counters` and `unsignalled` are touched several times per request: `@exclusivity(unchecked)`
    // saves a dynamic exclusivity check per touch. SAFETY: actor state, used only inside the actor's
    // isolation; the accesses are single statements (a SplitQueue method with the guest memory, a counter
    // increment, a flag), none of which can reach the same property again while it runs.
    @exclusivity(unchecked) public internal(set) var queues: [SplitQueue]
    public internal(set) var status: UInt8 = 0
    @exclusivity(unchecked) public internal(set) var counters = VirtioCounters()
    var offeredFeatures: UInt64
    var acceptedFeatures: UInt64 = 0
    var deviceFeatureSelect: UInt32 = 0
    var driverFeatureSelect: UInt32 = 0
    var queueSelect: UInt16 = 0
    var configVector: UInt16 = noVector
    var configGeneration: UInt8 = 0
    var isr: UInt8 = 0
    var warnedAboutBarMove = false
    /// Offset of the VIRTIO_PCI_CAP_PCI_CFG capability (the configuration-space window into BAR0).
    let pciCfgCapability: Int
    /// Per queue: something was put on the used ring since the last interrupt decision.
    @exclusivity(unchecked) var unsignalled: [Bool]
    /// Turns that stopped at the per-turn cap and re-queued the rest of the work (see ``drain``).
    public internal(set) var drainYields: UInt64 = 0
    /// Bounds the warnings a guest can cause (bad requests, bad queues).
    public internal(set) var guestLog = LogRateLimiter()

    /// One eventfd per queue, for `KVM_IOEVENTFD` on the queue's notify address (closed in deinit).
    public nonisolated let notifyFDs: [Int32]
    var notifyRegistrations: [Registration] = []
    /// Event timestamps for the benchmarks; nil (one check per event) unless attached.
    var recorder: VirtioEventRecorder?
    /// Quiesced for a snapshot (``quiesce()``): doorbells are only noted in `pendingDoorbells`.
    var quiesced = false
    var pendingDoorbells: [Bool]

    /// Per-queue placement (VirtioPciDevice+QueueWorkers.swift). On a device: its queue workers, and for each
    /// queue the index of the worker that serves it (nil: the device serves it itself).
    var workers: [VirtioPciDevice] = []
    var workerOfQueue: [Int?]
    /// On a queue worker: the device whose queues it serves (nil on a device), and which of them.
    public nonisolated let coordinator: VirtioPciDevice?
    public nonisolated let servedQueues: [Int]
    /// On a device: what the workers were last told; on a worker: what it was told (see ``WorkerView``).
    var workerView = WorkerView()
    /// On a device being reset: workers that have not yet confirmed their reset, and the status until they have.
    var resetsOutstanding = 0
    var statusBeforeReset: UInt8 = 0
    /// On a worker: it holds the served queues' state (between a hand-off and a hand-back or reset).
    var holdsQueues = false

    /// Creates the device with `backend`, placing BAR0 at `barAddress`. `vectors` must hold
    /// `backend.queueCount + 1` MSI targets (one per queue, one for configuration changes).
    ///
    /// With `coordinator`, the actor is that device's queue worker for `servedQueues` (per-queue placement):
    /// it shares the device's doorbell eventfds and vectors and serves only those queues, on its own `loop`.
    public init(name: String, loop: EventLoop, memory: GuestMemory, backend: sending any VirtioDeviceModel,
                barAddress: UInt64, vectors: [any MsiTarget], msiController: any MsiController,
                coordinator: VirtioPciDevice? = nil, servedQueues: [Int] = []) throws(Errno) {
        precondition(vectors.count == backend.queueCount + 1, "one MSI-X vector per queue plus one for config")
        self.coordinator = coordinator
        self.servedQueues = servedQueues
        workerOfQueue = Array(repeating: nil, count: backend.queueCount)
        self.name = name
        self.loop = loop
        self.memory = memory
        self.barAddress = barAddress
        self.backend = backend
        offeredFeatures = backend.deviceFeatures | VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors
            | VirtioFeature.ringEventIndex
        queues = Array(repeating: SplitQueue(size: backend.maxQueueSize), count: backend.queueCount)
        unsignalled = Array(repeating: false, count: backend.queueCount)
        pendingDoorbells = Array(repeating: false, count: backend.queueCount)
        msix = Msix(targets: vectors, controller: msiController)

        let type = backend.deviceType
        var space = PciConfigSpace(.init(
            vendor: 0x1AF4, device: 0x1040 + type.rawValue, revision: 1, classCode: type.pciClass.0,
            subclass: type.pciClass.1, subsystemVendor: 0x1AF4, subsystemID: 0x40))
        space.addMemoryBar64(index: 0, size: Self.barSize, address: barAddress)
        let msixBody = Msix.capabilityBody(vectors: vectors.count, bar: 0, tableOffset: UInt32(Self.msixTableOffset),
                                           pbaOffset: UInt32(Self.msixPbaOffset))
        msixCapability = space.addCapability(id: 0x11, body: msixBody.body, writable: msixBody.writable)
        func virtioCap(_ type: UInt8, offset: UInt64, length: UInt32, extra: [UInt8] = []) -> [UInt8] {
            // cap_len, cfg_type, bar, id, padding[2], offset, length (+ notify_off_multiplier)
            var body: [UInt8] = [UInt8(16 + extra.count), type, 0, 0, 0, 0]
            appendLE(&body, UInt32(offset))
            appendLE(&body, length)
            return body + extra
        }
        var multiplier: [UInt8] = []
        appendLE(&multiplier, Self.notifyMultiplier)
        space.addCapability(id: 0x09, body: virtioCap(1, offset: Self.commonOffset, length: UInt32(Self.commonLength)))
        space.addCapability(id: 0x09, body: virtioCap(2, offset: Self.notifyOffset, length: 0x1000, extra: multiplier))
        space.addCapability(id: 0x09, body: virtioCap(3, offset: Self.isrOffset, length: 1))
        space.addCapability(id: 0x09, body: virtioCap(4, offset: Self.deviceConfigOffset, length: UInt32(max(backend.configSize, 1))))
        // VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): bar, offset and length select a BAR0 access done through
        // pci_cfg_data (4 bytes after the capability header); all four fields are the driver's to write.
        var writable: [Int: UInt8] = [2: 0xFF]
        for index in 6..<18 { writable[index] = 0xFF }
        pciCfgCapability = space.addCapability(id: 0x09, body: virtioCap(5, offset: 0, length: 0, extra: [0, 0, 0, 0]),
                                               writable: writable)
        config = space

        if let coordinator {
            precondition(coordinator.notifyFDs.count == backend.queueCount, "a worker's backend has its device's queues")
            notifyFDs = coordinator.notifyFDs  // the device's: it closes them
            return
        }
        var fds: [Int32] = []
        for _ in 0..<backend.queueCount {
            do {
                fds.append(try syscallValue { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) })
            } catch {
                for fd in fds { close(fd) }
                throw error
            }
        }
        notifyFDs = fds
    }

    /// Starts watching the doorbell eventfds on the device's loop (after init: the handlers capture the
    /// actor). A doorbell then runs ``queueNotified(_:)`` on the loop thread, inside this actor.
    /// With queue workers, each watches the doorbells of the queues it serves and the device the rest.
    public func watchDoorbells() throws(Errno) {
        for (index, fd) in notifyFDs.enumerated() where servesDoorbell(index) {
            notifyRegistrations.append(try register(fd: fd) { device, _ in
                device.recorder?.record(.doorbell, queue: UInt16(index))
                EventFD.drainRaw(fd)
                device.doorbell(index)
            })
        }
    }

    /// Starts stamping doorbells, completions and interrupts into `recorder` (benchmarks only).
    public func attach(recorder: VirtioEventRecorder) {
        self.recorder = recorder
    }

    /// Stops watching doorbells and host descriptors (before the VM is torn down), then stops the queue
    /// workers, if any, the same way.
    public func stop() async {
        for registration in notifyRegistrations { loop.deregister(registration) }
        notifyRegistrations.removeAll()
        backend.reset(device: self)
        Log.flushSuppressed(&guestLog, source: name)
        await stopWorkers()
    }

    deinit {
        guard coordinator == nil else { return }  // a worker's doorbells are its device's
        for fd in notifyFDs { close(fd) }
    }

    /// The guest-physical address a write to which notifies queue `index` (for `KVM_IOEVENTFD`).
    public nonisolated func notifyAddress(queue index: Int) -> UInt64 {
        barAddress + Self.notifyOffset + UInt64(index) * UInt64(Self.notifyMultiplier)
    }

    public var isActive: Bool { status & Self.driverOK != 0 && status & Self.needsReset == 0 }
    public var negotiatedFeatures: UInt64 { acceptedFeatures }

    // MARK: - BAR0

    public func read(offset: UInt64, width: Int) -> UInt64 {
        guard config.memoryDecoding else { return allOnes(width) }  // nobody answers: all-ones, `width` bytes
        return readBar(offset: offset, width: width)
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        guard config.memoryDecoding else { return }
        writeBar(offset: offset, width: width, value: value)
    }

    /// A BAR0 read, from the bus or through the PCI_CFG window.
    func readBar(offset: UInt64, width: Int) -> UInt64 {
        switch offset {
        case Self.commonOffset..<(Self.commonOffset + Self.commonLength):
            return readCommon(offset: offset - Self.commonOffset, width: width)
        case Self.isrOffset:
            let value = isr
            isr = 0  // reading ISR clears it (§4.1.4.5)
            return UInt64(value)
        case Self.deviceConfigOffset..<(Self.deviceConfigOffset + 0x1000):
            return backend.readConfig(offset: Int(offset - Self.deviceConfigOffset), width: width)
        case Self.msixTableOffset..<(Self.msixTableOffset + 0x1000):
            return msix.readTable(offset: offset - Self.msixTableOffset, width: width)
        case Self.msixPbaOffset..<(Self.msixPbaOffset + 0x1000):
            return msix.readPba(offset: offset - Self.msixPbaOffset, width: width)
        default:
            return 0
        }
    }

    /// A BAR0 write, from the bus or through the PCI_CFG window.
    func writeBar(offset: UInt64, width: Int, value: UInt64) {
        switch offset {
        case Self.commonOffset..<(Self.commonOffset + Self.commonLength):
            writeCommon(offset: offset - Self.commonOffset, width: width, value: value)
        case Self.deviceConfigOffset..<(Self.deviceConfigOffset + 0x1000):
            backend.writeConfig(offset: Int(offset - Self.deviceConfigOffset), width: width, value: value)
        case Self.notifyOffset..<(Self.notifyOffset + 0x1000):
            // Reached only when the ioeventfd did not match (e.g. an unusual width), possibly on a vCPU
            // thread: signal the doorbell's eventfd, so the queue runs on the device's loop as usual.
            let queue = Int((offset - Self.notifyOffset) / UInt64(Self.notifyMultiplier))
            if queue < notifyFDs.count { EventFD.signalRaw(notifyFDs[queue]) }
        case Self.msixTableOffset..<(Self.msixTableOffset + 0x1000):
            msix.writeTable(offset: offset - Self.msixTableOffset, width: width, value: value)
            updateWorkerView()
        default:
            break
        }
    }

    // MARK: - Doorbells and interrupts

    /// The driver notified queue `index` (or the device re-queued its own unfinished work).
    public func queueNotified(_ index: Int) {
        if coordinator == nil, index < workerOfQueue.count, workerOfQueue[index] != nil {
            return EventFD.signalRaw(notifyFDs[index])  // a worker's queue: its doorbell, on its loop
        }
        counters.notifications &+= 1
        guard canDMA, index < queues.count, queues[index].ready else { return }
        backend.queueNotified(index, device: self)
    }

    /// Whether the device may touch the queues in guest memory: DRIVER_OK without NEEDS_RESET, and PCI
    /// Bus Master Enable set (a function with BME clear must not DMA). A queue worker follows what its device
    /// told it of BME.
    var canDMA: Bool { isActive && (coordinator == nil ? config.busMaster : workerView.mayDMA) }

    /// Counts bytes the device read from guest buffers.
    public func countRead(_ bytes: Int) { counters.bytesRead &+= UInt64(bytes) }
    /// Counts a request that failed or data that was dropped.
    public func countError() { counters.errors &+= 1 }
    public func countDropped() { counters.dropped &+= 1 }

    func raise(vector: UInt16, isrBit: UInt8) {
        counters.interrupts &+= 1
        if coordinator != nil { return raiseFromWorker(vector: vector) }
        if !msix.enabled { isr |= isrBit }
        msix.signal(Int(vector))
        recorder?.record(.interrupt, queue: vector)
    }

    /// DEVICE_NEEDS_RESET (§2.1.2): the driver must reset the device; a configuration interrupt tells it.
    func failDevice() {
        guard status & Self.needsReset == 0 else { return }
        if coordinator != nil { return failFromWorker() }
        status |= Self.needsReset
        configGeneration &+= 1
        raise(vector: configVector, isrBit: 2)
    }

    /// Lets a backend register a host descriptor on this device's loop; readiness calls
    /// `backend.hostEvent(token)` under this actor's isolation.
    public func watch(fd: Int32, events: IOEvents = .readable, token: Int) throws(Errno) -> Registration {
        try register(fd: fd, events: events) { device, _ in device.backend.hostEvent(token, device: device) }
    }
}
