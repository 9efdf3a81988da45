import ActorVmm
import CKvm
import EpollLoop
import Glibc

/// virtio-net (virtio 1.2 §5.1) backed by a TAP interface, with no offloads.
///
/// Both directions run on the device's loop. Transmit: each request (a 12-byte `virtio_net_hdr` plus the
/// frame) is written to the TAP as is (the TAP was opened with IFF_VNET_HDR). Receive: when the TAP is
/// readable, frames go into the guest's posted buffers; with no buffer posted the device stops reading the
/// TAP (frames wait in the kernel's TAP queue, which counts its own drops) until the guest posts more; a
/// buffer that cannot take the next frame is returned unused and the frame goes to the next buffer.
public final class NetBackend: VirtioBackend {
    public struct Options: Sendable, Equatable {
        /// The TAP's name; nil: the VMM creates one (``TapDevice/nameTemplate``).
        public var tap: String?
        public var mac: [UInt8]
        /// IPv4 address and netmask for the host side, network byte order; nil: see ``TapDevice``.
        public var address: UInt32?
        public var netmask: UInt32?
        public var id: String?
        public init(tap: String?, mac: [UInt8], address: UInt32? = nil, netmask: UInt32? = nil, id: String? = nil) {
            self.tap = tap; self.mac = mac; self.address = address; self.netmask = netmask; self.id = id
        }
    }

    static let receiveQueue = 0, transmitQueue = 1
    static let featureMac: UInt64 = 1 << 5, featureStatus: UInt64 = 1 << 16
    static let headerSize = 12
    /// The largest request we accept: a 64 KiB frame plus the header (no TSO is negotiated, so frames are
    /// at most the MTU; this bound only protects the host buffer).
    static let maxFrame = 65536 + headerSize

    public let deviceType = VirtioDeviceType.net
    public let queueCount = 2
    public let deviceFeatures = NetBackend.featureMac | NetBackend.featureStatus
    public let configSize = 12
    public let options: Options
    public var interfaceName: String { tapDevice.name }
    /// Owns the TAP's descriptor (shared with ``Opened`` until the device is built).
    let tapDevice: TapDevice
    var tapFD: Int32 { tapDevice.fd }
    var tap: HostWatch
    var frame = [UInt8](repeating: 0, count: NetBackend.maxFrame)
    /// The TAP failed for good (deleted on the host: reads fail with EBADFD); it is no longer watched.
    var tapFailed = false
    public private(set) var rxFrames: UInt64 = 0, txFrames: UInt64 = 0, rxDropped: UInt64 = 0, txDropped: UInt64 = 0
    /// Receive buffers returned unused because they were read-only or too small for the frame.
    public private(set) var rxBadBuffers: UInt64 = 0
    /// Bytes of a frame read from the TAP and not yet delivered (0: none).
    var pendingLength = 0

    /// The opened TAP, before a backend exists (`Sendable`: see ``BlockBackend/Opened``). Dropping it
    /// without building a backend closes the TAP (and removes one the VMM created).
    public struct Opened: Sendable {
        public let tap: TapDevice
        let options: Options
    }

    /// Opens (or creates) the TAP and configures the host side. Errors give the reason; the caller names the
    /// option or field.
    public static func open(_ options: Options) throws(VirtioError) -> Opened {
        let tap = try TapDevice(name: options.tap, address: options.address, netmask: options.netmask)
        Log.info("virtio-net\(options.id.map { " '\($0)'" } ?? ""): TAP \(tap.summary)")
        return Opened(tap: tap, options: options)
    }

    public init(_ opened: Opened) {
        tapDevice = opened.tap
        tap = HostWatch(fd: opened.tap.fd)
        options = opened.options
    }

    public convenience init(options: Options) throws(VirtioError) { self.init(try Self.open(options)) }

    public func readConfig(offset: Int, width: Int) -> UInt64 {
        var c = options.mac
        appendLE(&c, UInt16(1))     // status: VIRTIO_NET_S_LINK_UP
        appendLE(&c, UInt16(1))     // max_virtqueue_pairs
        appendLE(&c, UInt16(1500))  // mtu (informational: VIRTIO_NET_F_MTU is not offered)
        return readLE(c, offset: offset, width: width)
    }

    public func activate(device: isolated VirtioPciDevice) throws(VirtioError) {
        watchTap(device: device)
    }

    public func reset(device: isolated VirtioPciDevice) {
        tap.stop(device: device)
        pendingLength = 0
    }

    public func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        if index == Self.transmitQueue {
            transmit(device: device)
        } else {
            watchTap(device: device)  // buffers posted: read the TAP again
            receive(device: device)
        }
    }

    public func hostEvent(_ token: Int, device: isolated VirtioPciDevice) {
        receive(device: device)
    }

    /// Quiesced: the TAP is not read (frames wait in the kernel's queue).
    public func quiesce(device: isolated VirtioPciDevice) {
        tap.stop(device: device)
    }

    public func resume(device: isolated VirtioPciDevice) {
        guard device.isActive else { return }
        watchTap(device: device)
        receive(device: device)
    }

    /// A frame read from the TAP and not yet delivered travels with the snapshot (blob; empty: none).
    public func captureState() -> [UInt8] {
        var out = SnapshotEncoder()
        out.blob(Array(frame[0..<pendingLength]))
        return out.bytes
    }

    public func restoreState(_ bytes: [UInt8]) throws(SnapshotError) {
        var input = SnapshotDecoder(bytes, context: "net backend")
        let pending = try input.blob(limit: Self.maxFrame)
        try input.finish()
        guard pending.isEmpty || pending.count >= Self.headerSize else {
            throw .invalid("net backend: pending frame of \(pending.count) bytes")
        }
        frame.replaceSubrange(0..<pending.count, with: pending)
        pendingLength = pending.count
    }

    private func watchTap(device: isolated VirtioPciDevice) {
        if !tapFailed { tap.start(device: device) }
    }

    private func transmit(device: isolated VirtioPciDevice) {
        device.drain(queue: Self.transmitQueue) { chain in
            let length = chain.readableLength
            if length < Self.headerSize || length > Self.maxFrame {
                txDropped &+= 1
                device.countDropped()
            } else if let bytes = try? chain.readBytes(count: length, memory: device.memory) {
                let n = bytes.withUnsafeBytes { write(tapFD, $0.baseAddress, $0.count) }
                if n == length {
                    txFrames &+= 1
                    device.countRead(length)
                } else {
                    txDropped &+= 1  // TAP full or down: counted, as a NIC counts tx drops
                    device.countDropped()
                }
            }
            device.complete(chain, queue: Self.transmitQueue, written: 0)
            return true
        }
    }

    /// Moves frames from the TAP into receive buffers. A frame is read into `frame` first and stays there
    /// until a buffer takes it, so a bad buffer — read-only, or too small for the frame — costs the driver
    /// that buffer (returned used with length 0, counted in `rxBadBuffers`), not the frame and not the
    /// queue. At most the queue size of buffers per turn; the rest is re-queued (see ``VirtioPciDevice/yieldTurn(queue:)``).
    private func receive(device: isolated VirtioPciDevice) {
        guard tap.isWatching else { return }
        var budget = device.queueSize(Self.receiveQueue)
        while true {
            guard budget > 0 else {
                device.yieldTurn(queue: Self.receiveQueue)
                break
            }
            if pendingLength == 0 {
                let n = frame.withUnsafeMutableBytes { read(tapFD, $0.baseAddress, $0.count) }
                guard n > 0 else {
                    let error = errno
                    if n < 0 && error != EAGAIN && error != EINTR {
                        // The TAP is gone (the interface was deleted on the host) or broken. Its error
                        // condition would make epoll report it ready forever and keep the loop busy: stop
                        // watching it for good. The guest sees a link that receives nothing; transmit
                        // counts drops.
                        tapFailed = true
                        tap.stop(device: device)
                        device.countError()
                        Log.warning("\(device.name): TAP \(interfaceName) failed (\(Errno(rawValue: error))); no longer receiving from it")
                    }
                    break  // EAGAIN: nothing more to read
                }
                guard n >= Self.headerSize else {
                    rxDropped &+= 1  // not even a header: the host side's fault, dropped and counted
                    device.countDropped()
                    budget -= 1
                    continue
                }
                pendingLength = n
            }
            guard let chain = device.popRequest(queue: Self.receiveQueue) else {
                if device.awaitBuffers(queue: Self.receiveQueue) {
                    budget -= 1  // (bounded: a guest posting only bad buffers cannot keep this loop)
                    continue
                }
                tap.stop(device: device)  // back-pressure: watched again when the guest posts buffers
                break
            }
            budget -= 1
            guard chain.readable.isEmpty, pendingLength <= chain.writableLength else {
                rxBadBuffers &+= 1
                device.countError()
                device.complete(chain, queue: Self.receiveQueue, written: 0)
                continue
            }
            frame[10] = 1; frame[11] = 0  // num_buffers = 1 (no MRG_RXBUF)
            let written = (try? chain.writeBytes(Array(frame[0..<pendingLength]), memory: device.memory)) ?? 0
            device.complete(chain, queue: Self.receiveQueue, written: UInt32(written))
            pendingLength = 0
            rxFrames &+= 1
        }
        device.interruptIfNeeded(queue: Self.receiveQueue)
    }
}
