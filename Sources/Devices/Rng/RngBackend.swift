import ActorVmm
import EpollLoop
import Glibc

/// virtio-rng (virtio 1.2 §5.4): fills each device-writable buffer from an entropy source.
public final class RngBackend: VirtioBackend {
    /// At most this many bytes per request, so one request cannot keep the loop busy for long.
    public static let maxBytesPerRequest = 64 * 1024

    public let deviceType = VirtioDeviceType.entropy
    public let queueCount = 1
    public let deviceFeatures: UInt64 = 0
    public let configSize = 0
    let source: Int32

    /// The opened source, before a backend exists (`Sendable`: see ``BlockBackend/Opened``).
    public struct Opened: Sendable { let fd: Int32 }

    /// Opens `path` (e.g. /dev/urandom) for reading. The error names the path.
    public static func open(path: String) throws(VirtioError) -> Opened {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw VirtioError("--rng src=\(path): cannot open: \(Errno.current)") }
        return Opened(fd: fd)
    }

    public init(_ opened: Opened) { source = opened.fd }

    public convenience init(path: String) throws(VirtioError) { self.init(try Self.open(path: path)) }

    deinit { close(source) }

    public func readConfig(offset: Int, width: Int) -> UInt64 { 0 }
    public func activate(device: isolated VirtioPciDevice) throws(VirtioError) {}
    public func reset(device: isolated VirtioPciDevice) {}

    public func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        device.drain(queue: 0) { chain in
            var written = 0
            var budget = Self.maxBytesPerRequest
            for buffer in chain.writable where budget > 0 {
                let want = min(Int(buffer.length), budget)
                let got = (try? device.memory.withHostBytes(at: buffer.address, count: want) { bytes in
                    read(source, bytes.baseAddress, want)
                }) ?? -1
                guard got > 0 else {
                    device.countError()
                    break
                }
                written += got
                budget -= got
                if got < want { break }
            }
            device.complete(chain, queue: 0, written: UInt32(written))
            return true
        }
    }
}
