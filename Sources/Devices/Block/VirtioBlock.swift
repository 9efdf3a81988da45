import ActorVmm
import CKvm
import EpollLoop
import Glibc

/// virtio-blk (virtio 1.2 §5.2) over a raw image file, with one or more request queues (VIRTIO_BLK_F_MQ).
///
/// Reads, writes and flushes go to the image through an io_uring (``IoUring``) when the host has one: a
/// doorbell's requests are checked, queued on the ring and submitted with one `io_uring_enter`; completions
/// (at once for page-cache hits, later through the ring's eventfd on the device's loop) put the requests on
/// their used rings, one interrupt per queue per batch. Without io_uring — or with `engine: .sync`, or
/// `ACTOR_VMM_BLOCK_IO=sync` — the same requests are served synchronously with `preadv`/`pwritev`. Every
/// request is checked before any I/O: its shape (header, data, status byte), its range against the capacity,
/// writes against `readonly`. A host I/O error fails that request with IOERR; the device carries on. The
/// design (ordering, reset with I/O in flight, seccomp) is in docs/devices.md.
public final class VirtioBlock: VirtioDeviceModel {
    /// How requests reach the image.
    public enum Engine: String, Sendable, Equatable {
        /// io_uring when the host has it, else synchronous (``ioEngineVariable`` may force either).
        case auto
        /// io_uring; falls back to synchronous with a warning when it cannot be set up.
        case ioUring = "io_uring"
        /// `preadv`/`pwritev`/`fdatasync` on the device's loop.
        case sync
    }

    public struct Options: Sendable, Equatable {
        public var path: String
        public var readonly = false
        public var direct = false
        public var id: String?
        /// Request queues (Cloud Hypervisor's `num_queues`, default 1) and the size each offers (`queue_size`,
        /// default 128).
        public var numQueues = 1
        public var queueSize: UInt16 = 128
        public var engine = Engine.auto
        /// The backend serves its queues on a loop no other device shares (set by the placement, not a user
        /// option): writes may then take the loop for longer (BlockInlineWrites.swift).
        public var loopOfItsOwn = false
        public init(path: String, readonly: Bool = false, direct: Bool = false, id: String? = nil,
                    numQueues: Int = 1, queueSize: UInt16 = 128, engine: Engine = .auto, loopOfItsOwn: Bool = false) {
            self.path = path; self.readonly = readonly; self.direct = direct; self.id = id
            self.numQueues = numQueues; self.queueSize = queueSize; self.engine = engine
            self.loopOfItsOwn = loopOfItsOwn
        }
    }

    /// `ACTOR_VMM_BLOCK_IO=sync|io_uring` overrides ``Engine/auto`` (tests and benchmarks compare the paths).
    public static let ioEngineVariable = "ACTOR_VMM_BLOCK_IO"
    /// The most queues a disk may have (Linux uses at most one per vCPU).
    public static let maxQueues = 64

    // Feature bits (§5.2.3).
    static let featureSizeMax: UInt64 = 1 << 1, featureSegMax: UInt64 = 1 << 2, featureRO: UInt64 = 1 << 5, featureBlkSize: UInt64 = 1 << 6
    static let featureFlush: UInt64 = 1 << 9, featureMQ: UInt64 = 1 << 12, featureDiscard: UInt64 = 1 << 13, featureWriteZeroes: UInt64 = 1 << 14
    // Request types and status values (§5.2.6).
    static let typeIn: UInt32 = 0, typeOut: UInt32 = 1, typeFlush: UInt32 = 4, typeGetID: UInt32 = 8
    static let typeDiscard: UInt32 = 11, typeWriteZeroes: UInt32 = 13
    static let statusOK: UInt8 = 0, statusIOErr: UInt8 = 1, statusUnsupported: UInt8 = 2
    public static let sectorSize: UInt64 = 512
    /// What the config announces, so that the driver never builds a request over `maxRequestBytes`:
    /// at most `segMax` data segments (header and status not counted, as Linux reads it) of at most
    /// `sizeMax` bytes each — 126 × 128 KiB = 15.75 MiB.
    static let segMax: UInt32 = 126, sizeMax: UInt32 = 128 << 10
    /// Largest data transfer per request (bounds the bounce buffer and one request's time on the loop).
    static let maxRequestBytes = 16 << 20
    /// DISCARD / WRITE_ZEROES segment flags (§5.2.6): bit 0 is `unmap`; every other bit is unknown.
    static let flagUnmap: UInt32 = 1
    static let maxDiscardSectors: UInt32 = 1 << 22, maxDiscardSegments: UInt32 = 16

    public let deviceType = VirtioDeviceType.block
    public var queueCount: Int { options.numQueues }
    public var maxQueueSize: UInt16 { options.queueSize }
    public let configSize = 60
    public let options: Options
    public let capacitySectors: UInt64
    /// The image; closed when the last of this backend and its ``Opened`` goes.
    let file: OwnedDescriptor
    var fd: Int32 { file.fd }
    let idBytes: [UInt8]
    /// The ring, when requests go through io_uring (see ``engine``).
    let ring: IoUring?
    // The per-request state below is `@exclusivity(unchecked)`: without it every request paid about ten
    // dynamic exclusivity checks (the exclusivity runtime was 9-13% of the device loop's samples in row 3
    // profiles). SAFETY: the backend is used only inside its device actor's isolation (one thread at a time),
    // and no access to these properties overlaps another: `buffers` is lent to `drain` whose closure uses the
    // lent value, never `self.buffers`; `inFlight` and `scratch` are lent to `fillIovecs`, which touches
    // neither property of `self`; nothing on these paths calls back into the backend.
    /// Requests on the ring, and the storage every request reuses (BlockInFlight.swift).
    @exclusivity(unchecked) var inFlight: BlockInFlight
    /// The doorbell's request buffers, reused from request to request.
    @exclusivity(unchecked) var buffers = ChainBuffers()
    /// Scratch iovecs for a synchronous transfer and an aligned bounce buffer for `direct` (grown, kept).
    @exclusivity(unchecked) var scratch = IovecStorage()
    var bounce = BounceBuffer()
    /// Whether the image's file system takes `pwritev2`/`preadv2(RWF_NOWAIT)`: nil until a request asked,
    /// false after `EOPNOTSUPP` (``serveAlone``, ``serveWriteInline``).
    @exclusivity(unchecked) var nowaitWrites: Bool?
    @exclusivity(unchecked) var nowaitReads: Bool?
    /// Bytes of writes the loop may serve inline per queue turn (0: none; BlockInlineWrites.swift), and
    /// what is left of it in this turn.
    let inlineWriteBudget: Int
    @exclusivity(unchecked) var inlineBudgetLeft = 0
    /// Requests ``serveAlone`` served without the ring, and writes ``serveWriteInline`` served on the loop
    /// (for the tests).
    @exclusivity(unchecked) var servedAlone: UInt64 = 0
    @exclusivity(unchecked) var servedInline: UInt64 = 0
    /// The ring's eventfd on the device's loop while the device is active.
    var completionWatch: Registration?

    /// The path requests take.
    public var engine: Engine { ring == nil ? .sync : .ioUring }

    public var deviceFeatures: UInt64 {
        var features = Self.featureSizeMax | Self.featureSegMax | Self.featureBlkSize | Self.featureFlush
        features |= options.readonly ? Self.featureRO : Self.featureDiscard | Self.featureWriteZeroes
        if options.numQueues > 1 { features |= Self.featureMQ }
        return features
    }

    /// The opened image, before a backend exists: `Sendable`, so it can be prepared (and fail) before the
    /// VM is created and handed to the device actor afterwards.
    public struct Opened: Sendable {
        let file: OwnedDescriptor
        let options: Options
        let capacitySectors: UInt64
        let idBytes: [UInt8]
    }

    /// Checks the queue options: a reason (with Cloud Hypervisor's field name) or nil.
    public static func problem(with options: Options) -> String? {
        if options.numQueues < 1 || options.numQueues > maxQueues {
            return "num_queues \(options.numQueues): expected 1 to \(maxQueues)"
        }
        let size = options.queueSize
        if size < 2 || size > SplitQueue.maxSize || size & (size - 1) != 0 {
            return "queue_size \(size): expected a power of 2 from 2 to \(SplitQueue.maxSize)"
        }
        return nil
    }

    /// Opens the image, a regular file (raw images only), without blocking in `open` (``HostFile``). Errors
    /// give the reason only; the caller names the option or field and the path.
    public static func open(_ options: Options) throws(VirtioError) -> Opened {
        if let problem = problem(with: options) { throw VirtioError(problem) }
        var flags = options.readonly ? O_RDONLY : O_RDWR
        if options.direct { flags |= CKVM_O_DIRECT }
        let file = try HostFile.open(options.path, flags: flags, allowed: [.regular])
        var info = stat()
        guard fstat(file.fd, &info) == 0 else { throw VirtioError("cannot inspect: \(Errno.current)") }
        let id = options.id.map { Array($0.utf8) } ?? Array("\(info.st_dev)-\(info.st_ino)".utf8)
        return Opened(file: file, options: options, capacitySectors: UInt64(info.st_size) / Self.sectorSize,
                      idBytes: Array(id.prefix(20)) + [UInt8](repeating: 0, count: max(0, 20 - id.count)))
    }

    /// Takes ownership of an opened image and sets up its ring (on the thread that builds the device: the
    /// device threads' seccomp filter allows only `io_uring_enter`).
    public init(_ opened: Opened) {
        file = opened.file
        options = opened.options
        capacitySectors = opened.capacitySectors
        idBytes = opened.idBytes
        let slots = options.numQueues * Int(options.queueSize)
        inFlight = BlockInFlight(slots: slots)
        let engine = Self.resolvedEngine(options)
        ring = Self.makeRing(options, engine: engine, fd: opened.file.fd, entries: slots)
        inlineWriteBudget = Self.inlineWriteBudget(options, engine: engine, ring: ring != nil,
                                                   environment: getenv(Self.inlineWritesVariable).map { String(cString: $0) },
                                                   cpus: Int(ckvm_usable_cpus()))
    }

    /// Opens `options.path` and builds the backend (for tests and single-step callers).
    public convenience init(options: Options) throws(VirtioError) {
        self.init(try Self.open(options))
    }

    deinit {
        waitForInFlight()  // the kernel must be done with guest memory before anything is torn down
        guard inFlight.count == 0 else { return }  // could not wait: leak the iovecs rather than free them
        inFlight.releaseStorage()
        scratch.release()
        bounce.release()
    }

    /// `options.engine`, or for `.auto` what ``ioEngineVariable`` asks.
    static func resolvedEngine(_ options: Options) -> Engine {
        guard options.engine == .auto, let value = getenv(ioEngineVariable).map({ String(cString: $0) }) else {
            return options.engine
        }
        return Engine(rawValue: value) ?? .auto
    }

    static func makeRing(_ options: Options, engine: Engine, fd: Int32, entries: Int) -> IoUring? {
        guard engine != .sync else { return nil }
        do {
            return try IoUring(entries: min(entries, 1024), fd: fd)
        } catch {
            if engine == .ioUring { Log.warning("disk \(options.path): io_uring unavailable (\(error)); serving requests synchronously") }
            return nil
        }
    }

    public func readConfig(offset: Int, width: Int) -> UInt64 {
        ConfigImage.read(offset: offset, width: width) { c in
            c.append(capacitySectors)         // 0 capacity
            c.append(Self.sizeMax)            // 8 size_max
            c.append(Self.segMax)             // 12 seg_max
            c.append(UInt32(0))               // 16 geometry
            c.append(UInt32(Self.sectorSize)) // 20 blk_size
            c.zeros(8)                        // 24 topology
            c.zeros(2)                        // 32 writeback, unused
            c.append(UInt16(options.numQueues)) // 34 num_queues
            c.append(Self.maxDiscardSectors)  // 36 max_discard_sectors
            c.append(Self.maxDiscardSegments) // 40 max_discard_seg
            c.append(UInt32(1))               // 44 discard_sector_alignment
            c.append(Self.maxDiscardSectors)  // 48 max_write_zeroes_sectors
            c.append(Self.maxDiscardSegments) // 52 max_write_zeroes_seg
            c.append(UInt32(1))               // 56 write_zeroes_may_unmap
        }
    }

    public func activate(device: isolated VirtioPciDevice) throws(VirtioError) {
        guard let ring, completionWatch == nil else { return }
        do {
            completionWatch = try device.watch(fd: ring.eventFD, token: 0)
        } catch {
            throw VirtioError("cannot watch the io_uring completions: \(error)")
        }
    }

    /// Device reset or VM stop: waits for the requests on the ring (their completions are dropped: the driver
    /// forgot them, and guest memory must not be written once the device is reset), stops watching the ring.
    public func reset(device: isolated VirtioPciDevice) {
        waitForInFlight()
        if let completionWatch { device.loop.deregister(completionWatch) }
        completionWatch = nil
    }

    public func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        inlineBudgetLeft = inlineWriteBudget
        device.drain(queue: index, into: &buffers) { head, buffers in
            start(head: head, buffers, queue: index, device: device)
            return true
        }
        if ring != nil { submitAndReap(device: device) }
    }

    /// The ring's eventfd: completions were posted.
    public func hostEvent(_ token: Int, device: isolated VirtioPciDevice) {
        guard let ring else { return }
        EventFD.drainRaw(ring.eventFD)
        reapCompletions(device: device)
    }

    /// Puts a finished request on its used ring: the status byte, then the entry (`dataWritten` + 1 bytes).
    func finish(head: UInt16, queue: Int, status: UInt8, statusAddress: GuestAddress, dataWritten: Int,
                device: isolated VirtioPciDevice) {
        if (try? device.memory.write(status, at: statusAddress)) == nil { device.countError() }
        if status != Self.statusOK { device.countError() }
        device.complete(head: head, queue: queue, written: UInt32(dataWritten + 1))
    }
}
