import ActorVmm
import CKvm
import EpollLoop
import Glibc

/// One request, from its buffers to the image: parsing (header, data, status byte), the checks, and the
/// synchronous path. Nothing here allocates: the buffers, iovecs and bounce buffer are the backend's,
/// reused from request to request.
extension VirtioBlock {
    /// Starts the request popped as `head` on `queue`: on the ring (READ, WRITE, FLUSH with io_uring), or
    /// served and completed now (everything else, and everything without io_uring).
    func start(head: UInt16, _ request: borrowing ChainBuffers, queue: Int, device: isolated VirtioPciDevice) {
        guard let last = request.writable.last, last.length >= 1 else {
            device.countError()  // no room for a status byte: the driver broke the protocol
            device.complete(head: head, queue: queue, written: 0)
            return
        }
        let statusAddress = GuestAddress(last.address.rawValue + UInt64(last.length) - 1)
        let (status, written) = serve(head: head, request, queue: queue, statusAddress: statusAddress, device: device)
        guard let status else { return }  // on the ring: completed when the kernel is done
        finish(head: head, queue: queue, status: status, statusAddress: statusAddress, dataWritten: written, device: device)
    }

    /// Serves one request, or puts it on the ring and returns a nil status; otherwise its status and the
    /// data bytes written into guest memory.
    private func serve(head: UInt16, _ request: borrowing ChainBuffers, queue: Int, statusAddress: GuestAddress,
                       device: isolated VirtioPciDevice) -> (UInt8?, Int) {
        let memory = device.memory
        guard let (type, sector) = Self.readHeader(request, memory: memory) else { return (Self.statusIOErr, 0) }
        switch type {
        case Self.typeIn, Self.typeOut:
            let write = type == Self.typeOut
            if write && options.readonly { return (Self.statusIOErr, 0) }
            if ring != nil, let served = serveAlone(request, write: write, sector: sector, queue: queue, device: device) {
                return served
            }
            if write, inlineWriteBudget > 0, let status = serveWriteInline(request, sector: sector, device: device) {
                return (status, 0)
            }
            if ring != nil, let slot = inFlight.acquire() {
                if let bytes = fillIovecs(request, write: write, into: &inFlight.slots[slot].iovecs, memory: memory),
                   bytes.bytes > 0, checkRange(sector: sector, bytes: bytes.bytes),
                   queueTransfer(slot: slot, write: write, iovecs: bytes, sector: sector, head: head, queue: queue,
                                 status: statusAddress) {
                    if write { device.countRead(bytes.bytes) }
                    return (nil, 0)
                }
                inFlight.release(slot)  // not on the ring: served below
            }
            guard let bytes = fillIovecs(request, write: write, into: &scratch, memory: memory),
                  checkRange(sector: sector, bytes: bytes.bytes) else { return (Self.statusIOErr, 0) }
            if write { device.countRead(bytes.bytes) }
            let ok = transfer(scratch.base!, count: bytes.count, bytes: bytes.bytes, at: sector * Self.sectorSize, write: write)
            return (ok ? Self.statusOK : Self.statusIOErr, ok && !write ? bytes.bytes : 0)
        case Self.typeFlush:
            if options.readonly { return (Self.statusOK, 0) }
            if ring != nil, let slot = inFlight.acquire() {
                if queueFlush(slot: slot, head: head, queue: queue, status: statusAddress) { return (nil, 0) }
                inFlight.release(slot)
            }
            return (fdatasync(fd) == 0 ? Self.statusOK : Self.statusIOErr, 0)
        case Self.typeGetID:
            return (Self.statusOK, writeID(request, memory: memory))
        case Self.typeDiscard, Self.typeWriteZeroes:
            guard !options.readonly else { return (Self.statusIOErr, 0) }
            return (discardOrZero(request, zero: type == Self.typeWriteZeroes, memory: memory), 0)
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

    /// Host iovecs for the data part — the readable buffers after the 16-byte header (a write) or the
    /// writable ones without the status byte (a read) — in `storage`. Nil if a buffer is not in one RAM
    /// region or there are more than IOV_MAX (1024) of them.
    func fillIovecs(_ request: borrowing ChainBuffers, write: Bool, into storage: inout IovecStorage,
                    memory: GuestMemory) -> (count: Int, bytes: Int)? {
        let list = write ? request.readable : request.writable
        storage.reserve(list.count)
        var count = 0, bytes = 0, skip = write ? 16 : 0
        for (index, buffer) in list.enumerated() {
            var length = Int(buffer.length)
            if !write && index == list.count - 1 { length -= 1 }  // the status byte
            if skip >= length { skip -= length; continue }
            let address = GuestAddress(buffer.address.rawValue + UInt64(skip))
            length -= skip
            skip = 0
            guard count < 1024, let host = try? memory.hostPointer(address, length) else { return nil }
            storage.base![count] = iovec(iov_base: host, iov_len: length)
            count += 1
            bytes += length
        }
        return (count, bytes)
    }

    /// Reads or writes `bytes` of the image at `offset` from or to `count` iovecs (which it advances past
    /// what is done; short transfers are retried), synchronously; `direct` goes through the bounce buffer.
    func transfer(_ iovecs: UnsafeMutablePointer<iovec>, count: Int, bytes: Int, at offset: UInt64, write: Bool, done: Int = 0) -> Bool {
        if options.direct { return transferDirect(iovecs, count: count, bytes: bytes, at: offset, write: write) }
        var done = done, first = Self.advance(iovecs, count: count, by: done)
        while done < bytes {
            let n = write ? pwritev(fd, iovecs + first, Int32(count - first), off_t(offset) + off_t(done))
                          : preadv(fd, iovecs + first, Int32(count - first), off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }  // error, or end of file on a shrunk image
            done += n
            first += Self.advance(iovecs + first, count: count - first, by: n)
        }
        return true
    }

    /// Moves the iovecs' start past `bytes` bytes; returns how many iovecs were used up.
    static func advance(_ iovecs: UnsafeMutablePointer<iovec>, count: Int, by bytes: Int) -> Int {
        var left = bytes, used = 0
        while left > 0 && used < count {
            if iovecs[used].iov_len <= left {
                left -= iovecs[used].iov_len
                used += 1
            } else {
                iovecs[used].iov_base = iovecs[used].iov_base.map { $0 + left }
                iovecs[used].iov_len -= left
                left = 0
            }
        }
        return used
    }

    /// `O_DIRECT` needs sector-aligned memory, so the data goes through the aligned bounce buffer.
    func transferDirect(_ iovecs: UnsafeMutablePointer<iovec>, count: Int, bytes: Int, at offset: UInt64, write: Bool) -> Bool {
        guard bytes > 0 else { return true }
        guard let buffer = bounce.reserve(bytes) else { return false }
        if write {
            var cursor = 0
            for index in 0..<count {
                // SAFETY: the iovec names guest RAM checked by hostPointer; the bounce buffer holds `bytes`.
                memcpy(buffer + cursor, iovecs[index].iov_base, iovecs[index].iov_len)
                cursor += iovecs[index].iov_len
            }
            return pwrite(fd, buffer, bytes, off_t(offset)) == bytes
        }
        guard pread(fd, buffer, bytes, off_t(offset)) == bytes else { return false }
        var cursor = 0
        for index in 0..<count {
            // SAFETY: as above.
            memcpy(iovecs[index].iov_base, buffer + cursor, iovecs[index].iov_len)
            cursor += iovecs[index].iov_len
        }
        return true
    }

    /// GET_ID: the 20 id bytes into the writable buffers (without the status byte); the bytes written.
    func writeID(_ request: borrowing ChainBuffers, memory: GuestMemory) -> Int {
        var done = 0
        for (index, buffer) in request.writable.enumerated() where done < idBytes.count {
            var length = Int(buffer.length)
            if index == request.writable.count - 1 { length -= 1 }
            let take = min(length, idBytes.count - done)
            guard take > 0 else { continue }
            let ok = idBytes.withUnsafeBytes { id in
                (try? memory.write(bytes: UnsafeRawBufferPointer(rebasing: id[done..<(done + take)]), at: buffer.address)) != nil
            }
            guard ok else { break }
            done += take
        }
        return done
    }

    /// The request header's type and sector (virtio 1.2 §5.2.6: type le32, reserved le32, sector le64), or
    /// nil when the readable part is shorter than 16 bytes or outside guest RAM. Usually the header is the
    /// first buffer: one look-up and two loads; otherwise it is gathered across buffers.
    static func readHeader(_ request: borrowing ChainBuffers, memory: GuestMemory) -> (type: UInt32, sector: UInt64)? {
        if let first = request.readable.first, first.length >= 16 {
            guard let header = try? memory.hostPointer(first.address, 16) else { return nil }
            // SAFETY: the 16 bytes at `header` lie in guest RAM (checked just above); each field is read once.
            return (UInt32(littleEndian: header.loadUnaligned(as: UInt32.self)),
                    UInt64(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
        guard request.readableLength >= 16,
              let type = readLE(request.readable, offset: 0, width: 4, memory: memory),
              let sector = readLE(request.readable, offset: 8, width: 8, memory: memory) else { return nil }
        return (UInt32(type), sector)
    }

    /// A little-endian value of `width` bytes at byte `offset` of the concatenated `buffers`, or nil.
    static func readLE(_ buffers: [GuestBuffer], offset: Int, width: Int, memory: GuestMemory) -> UInt64? {
        if let first = buffers.first, offset >= 0, offset + width <= Int(first.length) {
            let address = GuestAddress(first.address.rawValue + UInt64(offset))
            switch width {  // the usual case: the header is the first buffer
            case 4: return (try? memory.read(UInt32.self, at: address)).map(UInt64.init)
            case 8: return try? memory.read(UInt64.self, at: address)
            default: break
            }
        }
        var value: UInt64 = 0, skip = offset, got = 0
        for buffer in buffers where got < width {
            let length = Int(buffer.length)
            if skip >= length { skip -= length; continue }
            while got < width && skip < length {
                guard let byte: UInt8 = try? memory.read(at: GuestAddress(buffer.address.rawValue + UInt64(skip))) else { return nil }
                value |= UInt64(byte) << (8 * UInt64(got))
                got += 1
                skip += 1
            }
            skip = 0
        }
        return got == width ? value : nil
    }
}
