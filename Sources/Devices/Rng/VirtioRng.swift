import ActorVmm
import EpollLoop
import Glibc

/// virtio-rng (virtio 1.2 §5.4): fills each device-writable buffer from an entropy source.
public final class VirtioRng: VirtioDeviceModel {
    /// At most this many bytes per request, so one request cannot keep the loop busy for long.
    public static let maxBytesPerRequest = 64 * 1024

    public let deviceType = VirtioDeviceType.entropy
    public let queueCount = 1
    public let deviceFeatures: UInt64 = 0
    public let configSize = 0
    let file: OwnedDescriptor
    var source: Int32 { file.fd }

    /// The opened source, before a backend exists (`Sendable`: see ``VirtioBlock/Opened``).
    public struct Opened: Sendable { let file: OwnedDescriptor }

    /// Opens `path` for reading: a character device (/dev/urandom, /dev/hwrng) or a regular file, never a
    /// FIFO or socket. It stays non-blocking, so a source with nothing to give (an hwrng, /dev/random before
    /// it is seeded) answers a request short instead of stalling the device loop. Errors give the reason
    /// only; the caller names the option or field and the path.
    public static func open(path: String) throws(VirtioError) -> Opened {
        Opened(file: try HostFile.open(path, flags: O_RDONLY, allowed: [.characterDevice, .regular], keepNonBlocking: true))
    }

    public init(_ opened: Opened) { file = opened.file }

    public convenience init(path: String) throws(VirtioError) { self.init(try Self.open(path: path)) }

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
