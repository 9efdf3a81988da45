import ActorVmm
import CKvm
import EpollLoop
import Glibc

/// virtio-net (virtio 1.2 §5.1) backed by a TAP interface opened with IFF_VNET_HDR (a 12-byte
/// `virtio_net_hdr` with `num_buffers` before every frame), with checksum and segmentation offloads,
/// mergeable receive buffers, several queue pairs and a control queue. docs/devices.md describes it.
///
/// Every queue runs on the device's loop. Transmit: each request (header plus frame) is written to the
/// pair's TAP queue with one `writev` straight from guest memory (``VirtioNet+Transmit``). Receive: when a
/// TAP queue is readable, frames are read with `readv` straight into the guest's posted buffers
/// (``VirtioNet+Receive``). Control queue: ``VirtioNet+Control``.
public final class VirtioNet: VirtioDeviceModel {
    public struct Options: Sendable, Equatable {
        /// The TAP's name; nil: the VMM creates one (``TapDevice/nameTemplate``).
        public var tap: String?
        public var mac: [UInt8]
        /// IPv4 address and netmask for the host side, network byte order; nil: see ``TapDevice``.
        public var address: UInt32?
        public var netmask: UInt32?
        public var id: String?
        /// Receive/transmit queue pairs (Cloud Hypervisor's `num_queues` / 2), one TAP queue each.
        public var queuePairs: Int
        /// The most entries each queue offers (`queue_size`; the driver may choose fewer).
        public var queueSize: UInt16
        /// Cloud Hypervisor's `offload_csum`, `offload_tso`, `offload_ufo`: offer these offloads (as far as
        /// the TAP takes them; TSO and UFO need checksum offload).
        public var offloadChecksum: Bool, offloadTso: Bool, offloadUfo: Bool
        public init(tap: String?, mac: [UInt8], address: UInt32? = nil, netmask: UInt32? = nil, id: String? = nil,
                    queuePairs: Int = 1, queueSize: UInt16 = SplitQueue.maxSize, offloadChecksum: Bool = true,
                    offloadTso: Bool = true, offloadUfo: Bool = true) {
            self.tap = tap; self.mac = mac; self.address = address; self.netmask = netmask; self.id = id
            self.queuePairs = queuePairs; self.queueSize = queueSize
            self.offloadChecksum = offloadChecksum; self.offloadTso = offloadTso; self.offloadUfo = offloadUfo
        }
    }

    /// The most queue pairs a device may have (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX is 0x8000; this bounds
    /// descriptors and MSI-X vectors).
    public static let maxQueuePairs = 16
    static let headerSize = 12
    /// The largest frame the TAP hands over or takes: a 64 KiB TSO/UFO frame, its VLAN tag, the header.
    static let maxFrame = headerSize + 65536 + 64
    /// The largest frame without receive offloads: an Ethernet frame with a VLAN tag, and the header.
    static let standardFrame = headerSize + 1518

    public let deviceType = VirtioDeviceType.net
    public let queueCount: Int
    public let deviceFeatures: UInt64
    /// The most entries a queue offers (the transport's `queue_size` before the driver picks one).
    public var maxQueueSize: UInt16 { options.queueSize }
    public let configSize = 12
    public let options: Options
    public var interfaceName: String { tapDevice.name }
    /// Owns the TAP's descriptors.
    let tapDevice: TapDevice
    var tapFD: Int32 { tapDevice.fd }
    let pairs: [NetQueuePair]
    /// The pairs this backend serves: all, or with per-queue placement none on the device (its queue
    /// workers serve them) and one on each worker (VirtioNet+QueueWorkers.swift).
    let servedPairs: [NetQueuePair]
    /// A queue worker's backend: the TAP's offloads and queues are its device's to set, not its own.
    let isQueueWorker: Bool
    var controlQueue: Int { 2 * pairs.count }
    /// Pairs in use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; 1 until the driver sets it).
    public internal(set) var activePairs = 1
    /// The TUNSETOFFLOAD flags in force.
    public internal(set) var tapOffloads: UInt32 = 0
    /// Negotiated at DRIVER_OK: frames may span buffers; the guest takes partial checksums.
    var mergeable = false, guestChecksum = false, largeFrames = false

    public internal(set) var rxFrames: UInt64 = 0, txFrames: UInt64 = 0, rxDropped: UInt64 = 0, txDropped: UInt64 = 0
    /// Receive buffers returned unused because they were read-only or too small for the frame.
    public internal(set) var rxBadBuffers: UInt64 = 0
    /// Control requests answered VIRTIO_NET_ERR or returned unused.
    public internal(set) var controlErrors: UInt64 = 0
    /// The TAP offloads a restored snapshot had in force, applied when the device resumes
    /// (``VirtioNet+Snapshot``); nil otherwise.
    var restoredOffloads: UInt32?

    /// The opened TAP, before a backend exists (`Sendable`: see ``VirtioBlock/Opened``). Dropping it
    /// without building a backend closes the TAP (and removes one the VMM created).
    public struct Opened: Sendable {
        public let tap: TapDevice
        let options: Options
    }

    /// Opens (or creates) the TAP with one queue per pair and configures the host side. Errors give the
    /// reason; the caller names the option or field.
    public static func open(_ options: Options) throws(VirtioError) -> Opened {
        guard (1...maxQueuePairs).contains(options.queuePairs) else {
            throw VirtioError("\(options.queuePairs) queue pairs: expected 1 to \(maxQueuePairs)")
        }
        guard options.queueSize > 0, options.queueSize <= SplitQueue.maxSize, options.queueSize & (options.queueSize - 1) == 0 else {
            throw VirtioError("queue size \(options.queueSize): expected a power of 2 up to \(SplitQueue.maxSize)")
        }
        let tap = try TapDevice(name: options.tap, address: options.address, netmask: options.netmask,
                                queues: options.queuePairs)
        let queues = options.queuePairs > 1 ? ", \(options.queuePairs) queues" : ""
        Log.info("virtio-net\(options.id.map { " '\($0)'" } ?? ""): TAP \(tap.summary)\(queues)")
        return Opened(tap: tap, options: options)
    }

    public init(_ opened: Opened, serving service: PairService = .all) {
        tapDevice = opened.tap
        options = opened.options
        pairs = opened.tap.queueFDs.indices.map { NetQueuePair(index: $0, fd: opened.tap.queueFDs[$0]) }
        switch service {
        case .all: servedPairs = pairs
        case .controlQueue: servedPairs = []
        case .pair(let index): servedPairs = [pairs[index]]
        }
        isQueueWorker = service != .all && service != .controlQueue
        queueCount = 2 * pairs.count + 1
        let o = opened.options
        deviceFeatures = NetFeature.offered(tapOffloads: opened.tap.supportedOffloads, queuePairs: pairs.count,
                                            checksum: o.offloadChecksum, tso: o.offloadTso, ufo: o.offloadUfo)
        if !isQueueWorker { setActivePairs(1) }  // until the driver asks for more (§5.1.6.5.5)
    }

    public convenience init(options: Options) throws(VirtioError) { self.init(try Self.open(options)) }

    public func readConfig(offset: Int, width: Int) -> UInt64 {
        var c = options.mac
        appendLE(&c, UInt16(1))                  // status: VIRTIO_NET_S_LINK_UP
        appendLE(&c, UInt16(pairs.count))        // max_virtqueue_pairs
        appendLE(&c, UInt16(1500))               // mtu (informational: VIRTIO_NET_F_MTU is not offered)
        return readLE(c, offset: offset, width: width)
    }

    public func activate(device: isolated VirtioPciDevice) throws(VirtioError) {
        let features = device.negotiatedFeatures
        mergeable = features & NetFeature.mergeableRxBuffers != 0
        guestChecksum = features & NetFeature.guestCsum != 0
        largeFrames = NetFeature.receivesLargeFrames(features)
        if let error = applyOffloads(NetFeature.tapOffloads(features)) {
            throw VirtioError("cannot set the TAP's offloads: \(error)")
        }
        setActivePairs(1)
        for pair in servedPairs where pair.index < activePairs { watchTap(pair, device: device) }
        Log.info("\(device.name): driver features 0x\(String(features, radix: 16)) (offered 0x\(String(device.offeredFeatures, radix: 16))), TAP offloads 0x\(String(tapOffloads, radix: 16)), \(mergeable ? "mergeable" : "single") receive buffers")
    }

    public func reset(device: isolated VirtioPciDevice) {
        for pair in pairs { pair.reset(device: device) }
        if !isQueueWorker { _ = applyOffloads(0) }  // a new driver has acked nothing yet
        mergeable = false; guestChecksum = false; largeFrames = false
    }

    public func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        guard index != controlQueue else { return serveControl(device: device) }
        let pair = pairs[index / 2]
        if index % 2 == 1 {
            transmit(pair, device: device)
        } else if pair.index < activePairs {
            watchTap(pair, device: device)  // buffers posted: read the TAP again
            receive(pair, device: device)
        }
    }

    public func hostEvent(_ token: Int, device: isolated VirtioPciDevice) {
        guard token < pairs.count else { return }
        receive(pairs[token], device: device)
    }

    func watchTap(_ pair: NetQueuePair, device: isolated VirtioPciDevice) {
        if !pair.failed && pair.attached { pair.watch.start(device: device) }
    }

    /// Sets the TAP's offloads to `flags` unless they are already; nil or the error.
    func applyOffloads(_ flags: UInt32) -> Errno? {
        guard flags != tapOffloads else { return nil }
        if let error = tapDevice.setOffloads(flags) { return error }
        tapOffloads = flags
        return nil
    }

    /// Uses pairs 0..<`count`: their TAP queues attached, the others detached (the kernel then steers no
    /// frame to a queue nobody reads). A TAP with one queue has nothing to attach.
    func setActivePairs(_ count: Int) {
        activePairs = count
        guard pairs.count > 1, !tapDevice.adopted else { return }
        for pair in pairs where pair.attached != (pair.index < count) {
            if let error = tapDevice.setQueue(pair.index, attached: pair.index < count) {
                Log.warning("virtio-net: TAP \(interfaceName) queue \(pair.index): \(error)")
            } else {
                pair.attached = pair.index < count
            }
        }
    }
}
