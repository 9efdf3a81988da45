import ActorVmm
import CKvm
import Glibc

/// DISCARD and WRITE_ZEROES (virtio 1.2 §5.2.6.2), served synchronously on the device's loop.
extension VirtioBlock {
    /// 16-byte segments { sector: le64, num_sectors: le32, flags: le32 } after the header. Every segment is
    /// checked before any is carried out: an unknown flag, or `unmap` on a discard, is UNSUPP; more segments
    /// or sectors than the config announces, or a range past the capacity, IOERR.
    func discardOrZero(_ request: borrowing ChainBuffers, zero: Bool, memory: GuestMemory) -> UInt8 {
        let length = request.readableLength - 16
        guard length > 0, length % 16 == 0, length / 16 <= Int(Self.maxDiscardSegments) else { return Self.statusIOErr }
        func field(_ index: Int, _ offset: Int, _ width: Int) -> UInt64? {
            Self.readLE(request.readable, offset: 16 + index * 16 + offset, width: width, memory: memory)
        }
        let count = length / 16
        let allowedFlags = UInt64(zero ? Self.flagUnmap : 0)
        for index in 0..<count {
            guard let flags = field(index, 12, 4) else { return Self.statusIOErr }
            if flags & ~allowedFlags != 0 { return Self.statusUnsupported }
        }
        for index in 0..<count {
            guard let sector = field(index, 0, 8), let sectors = field(index, 8, 4) else { return Self.statusIOErr }
            guard sectors <= UInt64(Self.maxDiscardSectors), sector <= capacitySectors,
                  sector + sectors <= capacitySectors else { return Self.statusIOErr }
        }
        // The guest may change the segments meanwhile: what is carried out is re-read and re-checked.
        for index in 0..<count {
            guard let sector = field(index, 0, 8), let sectors = field(index, 8, 4), let flags = field(index, 12, 4),
                  sectors <= UInt64(Self.maxDiscardSectors), sector <= capacitySectors, sector + sectors <= capacitySectors,
                  flags & ~allowedFlags == 0 else { return Self.statusIOErr }
            let start = Int64(sector * Self.sectorSize), bytes = Int64(sectors * Self.sectorSize)
            let unmap = flags & UInt64(Self.flagUnmap) != 0
            let mode = (zero && !unmap) ? CKVM_FALLOC_ZERO_RANGE | CKVM_FALLOC_KEEP_SIZE : CKVM_FALLOC_PUNCH_HOLE | CKVM_FALLOC_KEEP_SIZE
            if ckvm_fallocate(fd, mode, start, bytes) != 0 {
                // Discard is a hint: a file system without hole punching may ignore it. Zeroing is not.
                guard zero else { continue }
                guard writeZeroes(at: start, count: bytes) else { return Self.statusIOErr }
            }
        }
        return Self.statusOK
    }

    /// Zeroes [offset, offset + count) with pwrite (when the file system cannot zero a range).
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
