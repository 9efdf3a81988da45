import CKvm
import EpollLoop
import Glibc

/// Guest RAM in a snapshot: a flat file holding the regions one after the other, written sparse (pages
/// that are all zero are holes, so an idle 1 GiB guest costs what it uses), and the `memory` section that
/// describes it: file name (string) | file size u64 | region count u32 | per region: start u64, size u64.
public struct MemoryImage: Sendable, Equatable {
    public static let fileName = "memory.bin"
    public var fileName: String
    public var fileSize: UInt64
    public var regions: [(start: UInt64, size: UInt64)]

    public static func == (a: MemoryImage, b: MemoryImage) -> Bool {
        a.fileName == b.fileName && a.fileSize == b.fileSize && a.regions.map(\.start) == b.regions.map(\.start)
            && a.regions.map(\.size) == b.regions.map(\.size)
    }

    public init(of memory: GuestMemory, fileName: String = MemoryImage.fileName) {
        self.fileName = fileName
        regions = memory.regions.map { ($0.start.rawValue, $0.size) }
        fileSize = memory.totalSize
    }

    init(fileName: String, fileSize: UInt64, regions: [(start: UInt64, size: UInt64)]) {
        self.fileName = fileName; self.fileSize = fileSize; self.regions = regions
    }

    public func encode() -> [UInt8] {
        var out = SnapshotEncoder()
        out.string(fileName)
        out.u64(fileSize)
        out.u32(UInt32(regions.count))
        for region in regions {
            out.u64(region.start)
            out.u64(region.size)
        }
        return out.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(SnapshotError) -> MemoryImage {
        var input = SnapshotDecoder(bytes, context: "memory section")
        let name = try input.string(limit: 255)
        guard !name.isEmpty, !name.contains("/"), name != "..", name != "." else {
            throw .invalid("memory section: file name '\(name)' is not a plain file name")
        }
        let size = try input.u64()
        let count = try input.u32()
        guard count <= 64 else { throw .invalid("memory section: \(count) regions") }
        var regions: [(UInt64, UInt64)] = []
        for _ in 0..<count { regions.append((try input.u64(), try input.u64())) }
        try input.finish()
        let total = regions.reduce(UInt64(0)) { $0 &+ $1.1 }
        guard total == size else { throw .invalid("memory section: regions add up to \(total) bytes, the file has \(size)") }
        return MemoryImage(fileName: name, fileSize: size, regions: regions)
    }

    /// Checks that `memory` has exactly the snapshot's regions.
    public func check(against memory: GuestMemory) throws(SnapshotError) {
        let mine = regions.map { "\(hex($0.start))+\($0.size >> 20) MiB" }
        let theirs = memory.regions.map { "\(hex($0.start.rawValue))+\($0.size >> 20) MiB" }
        guard regions.map(\.start) == memory.regions.map(\.start.rawValue), regions.map(\.size) == memory.regions.map(\.size) else {
            throw .mismatch("guest memory is \(theirs.joined(separator: ", ")), the snapshot has \(mine.joined(separator: ", "))")
        }
    }

    /// Writes `memory` to `path`, leaving holes for zero pages. Call with the vCPUs paused and devices quiesced.
    public static func write(_ memory: GuestMemory, to path: String) throws(SnapshotError) -> MemoryImage {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io("cannot create \(path): \(Errno.current)") }
        defer { close(fd) }
        let page = Int(DirtyPages.pageSize)
        let zero = [UInt8](repeating: 0, count: page)
        var fileOffset: UInt64 = 0
        for region in memory.regions {
            let base = UnsafeRawPointer(bitPattern: region.hostAddress)!
            var offset = 0
            while offset < Int(region.size) {
                // SAFETY: offset + page <= region.size (sizes are page multiples), inside the mapping.
                let pointer = base + offset
                let isZero = zero.withUnsafeBytes { memcmp(pointer, $0.baseAddress!, page) == 0 }
                if !isZero {
                    try writeFully(fd, pointer, page, at: off_t(fileOffset) + off_t(offset), path: path)
                }
                offset += page
            }
            fileOffset += region.size
        }
        guard ftruncate(fd, off_t(fileOffset)) == 0, fsync(fd) == 0 else { throw .io("cannot write \(path): \(Errno.current)") }
        return MemoryImage(of: memory)
    }

    /// Loads the file at `path` into `memory`: only the file's data extents are read (`SEEK_DATA`/
    /// `SEEK_HOLE`); holes become zero pages again (`MADV_DONTNEED` on private anonymous RAM), unallocated.
    public func read(into memory: GuestMemory, from path: String) throws(SnapshotError) {
        try check(against: memory)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("cannot open \(path): \(Errno.current)") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io("cannot stat \(path): \(Errno.current)") }
        guard UInt64(info.st_size) == fileSize else {
            throw .truncated("\(path) has \(info.st_size) bytes, the snapshot says \(fileSize)")
        }
        var fileOffset: UInt64 = 0
        for region in memory.regions {
            let base = UnsafeMutableRawPointer(bitPattern: region.hostAddress)!
            var position = off_t(fileOffset)
            let end = off_t(fileOffset + region.size)
            while position < end {
                var data = lseek(fd, position, 3 /* SEEK_DATA */)
                if data < 0 || data > end { data = end }  // ENXIO: no data after `position`
                // A hole is zero in the snapshot: drop whatever the new VM's RAM holds there (a loaded
                // kernel, say); the kernel gives zero pages on the next touch.
                if data > position {
                    // SAFETY: [position, data) lies inside this region's part of the file, so inside the mapping.
                    _ = madvise(base + Int(position - off_t(fileOffset)), Int(data - position), MADV_DONTNEED)
                }
                if data >= end { break }
                var hole = lseek(fd, data, 4 /* SEEK_HOLE */)
                if hole < 0 || hole > end { hole = end }
                var done = data
                while done < hole {
                    // SAFETY: [done, hole) lies inside this region's part of the file, so inside the mapping.
                    let n = pread(fd, base + Int(done - off_t(fileOffset)), Int(hole - done), done)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw .io("cannot read \(path) at \(done): \(n == 0 ? "unexpected end" : "\(Errno.current)")") }
                    done += off_t(n)
                }
                position = hole
            }
            fileOffset += region.size
        }
    }

    static func writeFully(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int, at offset: off_t, path: String) throws(SnapshotError) {
        var done = 0
        while done < count {
            let n = pwrite(fd, pointer + done, count - done, offset + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .io("cannot write \(path): \(Errno.current)") }
            done += n
        }
    }
}
