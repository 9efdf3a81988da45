import ActorVmm
import CKvm
import EpollLoop
import Glibc

/// virtio-net (virtio 1.2 §5.1) backed by a TAP interface, with no offloads.
///
/// Both directions run on the device's loop. Transmit: each request (a 12-byte `virtio_net_hdr` plus the
/// frame) is written to the TAP as is (the TAP was opened with IFF_VNET_HDR). Receive: when the TAP is
/// readable, frames go into the guest's posted buffers; with no buffer posted the device stops reading the
/// TAP (frames wait in the kernel's TAP queue, which counts its own drops) until the guest posts more.
public final class NetBackend: VirtioBackend {
    public struct Options: Sendable, Equatable {
        public var tap: String
        public var mac: [UInt8]
        public var ipv4: (address: UInt32, mask: UInt32)?  // network byte order
        public var id: String?
        public init(tap: String, mac: [UInt8], ipv4: (address: UInt32, mask: UInt32)?, id: String? = nil) {
            self.tap = tap; self.mac = mac; self.ipv4 = ipv4; self.id = id
        }
        public static func == (a: Options, b: Options) -> Bool {
            a.tap == b.tap && a.mac == b.mac && a.ipv4?.address == b.ipv4?.address && a.ipv4?.mask == b.ipv4?.mask && a.id == b.id
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
    public let interfaceName: String
    let file: OwnedDescriptor
    var tapFD: Int32 { file.fd }
    var tap: HostWatch
    var frame = [UInt8](repeating: 0, count: NetBackend.maxFrame)
    /// The TAP failed for good (deleted on the host: reads fail with EBADFD); it is no longer watched.
    var tapFailed = false
    public private(set) var rxFrames: UInt64 = 0, txFrames: UInt64 = 0, rxDropped: UInt64 = 0, txDropped: UInt64 = 0

    /// The opened TAP, before a backend exists (`Sendable`: see ``BlockBackend/Opened``).
    public struct Opened: Sendable {
        let file: OwnedDescriptor
        let interfaceName: String
        let options: Options
    }

    /// Opens (or creates) the TAP and configures the host side. Errors give the reason; the caller names the
    /// option or field.
    public static func open(_ options: Options) throws(VirtioError) -> Opened {
        var name = [CChar](repeating: 0, count: 16)
        let fd = ckvm_tap_open(options.tap, &name, name.count)
        guard fd >= 0 else { throw VirtioError("cannot open the TAP interface: \(Errno.current)") }
        let actual = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let ip = options.ipv4
        guard ckvm_if_configure(actual, ip?.address ?? 0, ip?.mask ?? 0, ip == nil ? 0 : 1) == 0 else {
            let error = Errno.current
            close(fd)
            throw VirtioError("cannot configure \(actual): \(error)")
        }
        return Opened(file: OwnedDescriptor(fd), interfaceName: actual, options: options)
    }

    public init(_ opened: Opened) {
        file = opened.file
        tap = HostWatch(fd: opened.file.fd)
        interfaceName = opened.interfaceName
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

    private func receive(device: isolated VirtioPciDevice) {
        guard tap.isWatching else { return }
        var delivered = false
        while true {
            guard let chain = device.popRequest(queue: Self.receiveQueue) else {
                tap.stop(device: device)  // back-pressure: watched again when the guest posts buffers
                break
            }
            let n = frame.withUnsafeMutableBytes { read(tapFD, $0.baseAddress, $0.count) }
            guard n > 0 else {
                let error = errno
                device.putBack(chain, queue: Self.receiveQueue)
                if n < 0 && error != EAGAIN && error != EINTR {
                    // The TAP is gone (the interface was deleted on the host) or broken. Its error condition
                    // would make epoll report it ready forever and keep the loop busy: stop watching it for
                    // good. The guest sees a link that receives nothing; transmit counts drops.
                    tapFailed = true
                    tap.stop(device: device)
                    device.countError()
                    Log.warning("\(device.name): TAP \(interfaceName) failed (\(Errno(rawValue: error))); no longer receiving from it")
                }
                break  // EAGAIN: nothing more to read
            }
            guard n >= Self.headerSize, n <= chain.writableLength else {
                rxDropped &+= 1  // does not fit the guest's buffer
                device.countDropped()
                device.putBack(chain, queue: Self.receiveQueue)
                continue
            }
            frame[10] = 1; frame[11] = 0  // num_buffers = 1 (no MRG_RXBUF)
            let written = (try? chain.writeBytes(Array(frame[0..<n]), memory: device.memory)) ?? 0
            device.complete(chain, queue: Self.receiveQueue, written: UInt32(written))
            rxFrames &+= 1
            delivered = true
        }
        if delivered { device.interruptIfNeeded(queue: Self.receiveQueue) }
    }
}
