import ActorVmm
import CKvm
import EpollLoop
import Glibc

/// virtio-blk (virtio 1.2 §5.2) over a raw image file.
///
/// Requests are served synchronously on the device's loop with `pread`/`pwrite` straight into guest
/// memory (or through an aligned bounce buffer for `direct=on`). Every request is checked before any I/O:
/// its shape (header, data, status byte), its range against the capacity, and writes against `readonly`.
/// A host I/O error fails that request with IOERR; the device and the VMM carry on.
public final class BlockBackend: VirtioBackend {
    public struct Options: Sendable, Equatable {
        public var path: String
        public var readonly = false
        public var direct = false
        public var id: String?
        public init(path: String, readonly: Bool = false, direct: Bool = false, id: String? = nil) {
            self.path = path; self.readonly = readonly; self.direct = direct; self.id = id
        }
    }

    // Feature bits (§5.2.3).
    static let featureSizeMax: UInt64 = 1 << 1, featureSegMax: UInt64 = 1 << 2, featureRO: UInt64 = 1 << 5, featureBlkSize: UInt64 = 1 << 6
    static let featureFlush: UInt64 = 1 << 9, featureDiscard: UInt64 = 1 << 13, featureWriteZeroes: UInt64 = 1 << 14
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
    public let queueCount = 1
    public let configSize = 60
    public let options: Options
    public let capacitySectors: UInt64
    /// The image; closed when the last of this backend and its ``Opened`` goes.
    let file: OwnedDescriptor
    var fd: Int32 { file.fd }
    let idBytes: [UInt8]

    public var deviceFeatures: UInt64 {
        var features = Self.featureSizeMax | Self.featureSegMax | Self.featureBlkSize | Self.featureFlush
        features |= options.readonly ? Self.featureRO : Self.featureDiscard | Self.featureWriteZeroes
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

    /// Opens the image, a regular file (raw images only), without blocking in `open` (``HostFile``). Errors
    /// give the reason only; the caller names the option or field and the path.
    public static func open(_ options: Options) throws(VirtioError) -> Opened {
        var flags = options.readonly ? O_RDONLY : O_RDWR
        if options.direct { flags |= CKVM_O_DIRECT }
        let file = try HostFile.open(options.path, flags: flags, allowed: [.regular])
        var info = stat()
        guard fstat(file.fd, &info) == 0 else { throw VirtioError("cannot inspect: \(Errno.current)") }
        let id = options.id.map { Array($0.utf8) } ?? Array("\(info.st_dev)-\(info.st_ino)".utf8)
        return Opened(file: file, options: options, capacitySectors: UInt64(info.st_size) / Self.sectorSize,
                      idBytes: Array(id.prefix(20)) + [UInt8](repeating: 0, count: max(0, 20 - id.count)))
    }

    /// Takes ownership of an opened image.
    public init(_ opened: Opened) {
        file = opened.file
        options = opened.options
        capacitySectors = opened.capacitySectors
        idBytes = opened.idBytes
    }

    /// Opens `options.path` and builds the backend (for tests and single-step callers).
    public convenience init(options: Options) throws(VirtioError) {
        self.init(try Self.open(options))
    }

    public func readConfig(offset: Int, width: Int) -> UInt64 {
        var c: [UInt8] = []
        appendLE(&c, capacitySectors)         // 0 capacity
        appendLE(&c, Self.sizeMax)            // 8 size_max
        appendLE(&c, Self.segMax)             // 12 seg_max
        appendLE(&c, UInt32(0))               // 16 geometry
        appendLE(&c, UInt32(Self.sectorSize)) // 20 blk_size
        c += [UInt8](repeating: 0, count: 8)  // 24 topology
        c += [0, 0]                           // 32 writeback, unused
        appendLE(&c, UInt16(1))               // 34 num_queues
        appendLE(&c, Self.maxDiscardSectors)  // 36 max_discard_sectors
        appendLE(&c, Self.maxDiscardSegments) // 40 max_discard_seg
        appendLE(&c, UInt32(1))               // 44 discard_sector_alignment
        appendLE(&c, Self.maxDiscardSectors)  // 48 max_write_zeroes_sectors
        appendLE(&c, Self.maxDiscardSegments) // 52 max_write_zeroes_seg
        c += [1, 0, 0, 0]                     // 56 write_zeroes_may_unmap
        return readLE(c, offset: offset, width: width)
    }

    public func activate(device: isolated VirtioPciDevice) throws(VirtioError) {}
    public func reset(device: isolated VirtioPciDevice) {}

    public func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        device.drain(queue: 0) { chain in
            let (status, dataWritten) = serve(chain, device: device)
            if let status, let statusAddress = chain.writable.last.map({ GuestAddress($0.address.rawValue + UInt64($0.length) - 1) }) {
                if (try? device.memory.write(status, at: statusAddress)) == nil { device.countError() }
                if status != Self.statusOK { device.countError() }
                device.complete(chain, queue: 0, written: UInt32(dataWritten + 1))
            } else {
                device.countError()  // no room for a status byte: the driver broke the protocol
                device.complete(chain, queue: 0, written: 0)
            }
            return true
        }
    }

    /// Serves one request; returns its status (nil when it has no status byte) and the data bytes written
    /// into guest memory.
    func serve(_ chain: borrowing DescriptorChain, device: isolated VirtioPciDevice) -> (UInt8?, Int) {
        guard let last = chain.writable.last, last.length >= 1 else { return (nil, 0) }
        guard chain.readableLength >= 16, let header = try? chain.readBytes(count: 16, memory: device.memory) else {
            return (Self.statusIOErr, 0)
        }
        let type = UInt32(readLE(header, offset: 0, width: 4))
        let sector = readLE(header, offset: 8, width: 8)
        // Data buffers: writable ones minus the status byte (IN), or readable ones after the header (OUT).
        var inBuffers = chain.writable
        inBuffers[inBuffers.count - 1] = GuestBuffer(address: last.address, length: last.length - 1)
        if inBuffers[inBuffers.count - 1].length == 0 { inBuffers.removeLast() }
        let outBuffers = chain.readableSlices(from: 16)

        switch type {
        case Self.typeIn:
            let length = inBuffers.reduce(0) { $0 + Int($1.length) }
            guard checkRange(sector: sector, bytes: length) else { return (Self.statusIOErr, 0) }
            let ok = transfer(inBuffers, at: sector * Self.sectorSize, write: false, memory: device.memory)
            return (ok ? Self.statusOK : Self.statusIOErr, ok ? length : 0)
        case Self.typeOut:
            let length = outBuffers.reduce(0) { $0 + Int($1.length) }
            guard !options.readonly, checkRange(sector: sector, bytes: length) else { return (Self.statusIOErr, 0) }
            device.countRead(length)
            return (transfer(outBuffers, at: sector * Self.sectorSize, write: true, memory: device.memory) ? Self.statusOK : Self.statusIOErr, 0)
        case Self.typeFlush:
            if options.readonly { return (Self.statusOK, 0) }
            return (fdatasync(fd) == 0 ? Self.statusOK : Self.statusIOErr, 0)
        case Self.typeGetID:
            let written = (try? chain.writeBytes(idBytes, memory: device.memory)) ?? 0
            return (Self.statusOK, min(written, inBuffers.reduce(0) { $0 + Int($1.length) }))
        case Self.typeDiscard, Self.typeWriteZeroes:
            guard !options.readonly else { return (Self.statusIOErr, 0) }
            return (discardOrZero(chain, zero: type == Self.typeWriteZeroes, memory: device.memory), 0)
        default:
            return (Self.statusUnsupported, 0)
        }
    }

    /// True when [sector, sector + bytes) is whole sectors inside the disk and within the request limit.
    func checkRange(sector: UInt64, bytes: Int) -> Bool {
        guard bytes % Int(Self.sectorSize) == 0, bytes <= Self.maxRequestBytes else { return false }
        let (end, overflow) = sector.addingReportingOverflow(UInt64(bytes) / Self.sectorSize)
        return !overflow && end <= capacitySectors
    }

    /// Reads or writes the file at `offset` to or from guest `buffers`.
    func transfer(_ buffers: [GuestBuffer], at offset: UInt64, write: Bool, memory: GuestMemory) -> Bool {
        if options.direct { return transferDirect(buffers, at: offset, write: write, memory: memory) }
        var position = off_t(offset)
        for buffer in buffers {
            var done = 0
            let length = Int(buffer.length)
            while done < length {
                let n = (try? memory.withHostBytes(at: GuestAddress(buffer.address.rawValue + UInt64(done)), count: length - done) { bytes in
                    write ? pwrite(fd, bytes.baseAddress, bytes.count, position) : pread(fd, bytes.baseAddress, bytes.count, position)
                }) ?? -1
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }  // error, or end of file on a shrunk image
                done += n
                position += off_t(n)
            }
        }
        return true
    }

    /// `O_DIRECT` needs sector-aligned memory, so the data goes through one aligned bounce buffer.
    func transferDirect(_ buffers: [GuestBuffer], at offset: UInt64, write: Bool, memory: GuestMemory) -> Bool {
        let total = buffers.reduce(0) { $0 + Int($1.length) }
        guard total > 0 else { return true }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 4096, total) == 0, let bounce = raw else { return false }
        defer { free(bounce) }
        var cursor = 0
        if write {
            for buffer in buffers {
                guard (try? memory.read(into: UnsafeMutableRawBufferPointer(start: bounce + cursor, count: Int(buffer.length)), at: buffer.address)) != nil else { return false }
                cursor += Int(buffer.length)
            }
            return pwrite(fd, bounce, total, off_t(offset)) == total
        }
        guard pread(fd, bounce, total, off_t(offset)) == total else { return false }
        for buffer in buffers {
            guard (try? memory.write(bytes: UnsafeRawBufferPointer(start: bounce + cursor, count: Int(buffer.length)), at: buffer.address)) != nil else { return false }
            cursor += Int(buffer.length)
        }
        return true
    }

    /// DISCARD and WRITE_ZEROES: 16-byte segments { sector: le64, num_sectors: le32, flags: le32 }. Every
    /// segment is checked before any is carried out (§5.2.6.2): an unknown flag, or `unmap` on a discard,
    /// is UNSUPP; more segments or sectors than the config announces, or a range past the capacity, IOERR.
    func discardOrZero(_ chain: borrowing DescriptorChain, zero: Bool, memory: GuestMemory) -> UInt8 {
        let length = chain.readableLength - 16
        guard length > 0, length % 16 == 0, length / 16 <= Int(Self.maxDiscardSegments),
              let bytes = try? chain.readBytes(offset: 16, count: length, memory: memory) else {
            return Self.statusIOErr
        }
        let segments = (0..<(length / 16)).map { index in
            (sector: readLE(bytes, offset: index * 16, width: 8), count: readLE(bytes, offset: index * 16 + 8, width: 4),
             flags: UInt32(readLE(bytes, offset: index * 16 + 12, width: 4)))
        }
        let allowedFlags = zero ? Self.flagUnmap : 0
        if segments.contains(where: { $0.flags & ~allowedFlags != 0 }) { return Self.statusUnsupported }
        for segment in segments {
            guard segment.count <= UInt64(Self.maxDiscardSectors), segment.sector <= capacitySectors,
                  segment.sector + segment.count <= capacitySectors else { return Self.statusIOErr }
        }
        for segment in segments {
            let start = Int64(segment.sector * Self.sectorSize), bytes = Int64(segment.count * Self.sectorSize)
            let unmap = segment.flags & Self.flagUnmap != 0
            let mode = (zero && !unmap) ? CKVM_FALLOC_ZERO_RANGE | CKVM_FALLOC_KEEP_SIZE : CKVM_FALLOC_PUNCH_HOLE | CKVM_FALLOC_KEEP_SIZE
            if ckvm_fallocate(fd, mode, start, bytes) != 0 {
                // Discard is a hint: a file system without hole punching may ignore it. Zeroing is not.
                guard zero else { continue }
                guard writeZeroes(at: start, count: bytes) else { return Self.statusIOErr }
            }
        }
        return Self.statusOK
    }

    func writeZeroes(at offset: Int64, count: Int64) -> Bool {
        let zeroes = [UInt8](repeating: 0, count: 64 << 10)
        var done: Int64 = 0
        while done < count {
            let n = zeroes.withUnsafeBytes { pwrite(fd, $0.baseAddress, Int(min(Int64($0.count), count - done)), off_t(offset + done)) }
            guard n > 0 else { return false }
            done += Int64(n)
        }
        return true
    }
}
