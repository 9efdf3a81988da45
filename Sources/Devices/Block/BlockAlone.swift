import ActorVmm
import CKvm
import Glibc

/// A doorbell that brings a single request (queue depth 1) with nothing on the ring: served at once with
/// `preadv2`/`pwritev2(RWF_NOWAIT)` when that does not block (page-cache hits), instead of a trip through
/// the ring. The ring's `io_uring_enter` for one request costs more than one `preadv` (docs/benchmarks.md,
/// row 3), and a write it cannot do without blocking goes to an io-wq worker thread and its wake-up. A
/// transfer that would block (EAGAIN), a short one, or a file system that cannot tell (EOPNOTSUPP: ext4's
/// buffered writes, tmpfs's reads and writes; remembered per image) goes on the ring as before — or, for a
/// write, on the loop when BlockInlineWrites.swift says so.
extension VirtioBlock {
    /// The status and data bytes of a request served at once, or nil to put it on the ring.
    func serveAlone(_ request: borrowing ChainBuffers, write: Bool, sector: UInt64, queue: Int,
                    device: isolated VirtioPciDevice) -> (UInt8?, Int)? {
        guard !options.direct, inFlight.count == 0, (write ? nowaitWrites : nowaitReads) != false,
              !device.hasPendingRequests(queue: queue) else { return nil }
        guard let iovecs = fillIovecs(request, write: write, into: &scratch, memory: device.memory),
              iovecs.bytes > 0, checkRange(sector: sector, bytes: iovecs.bytes), let base = scratch.base else { return nil }
        let done = transferNowait(base, count: iovecs.count, at: sector * Self.sectorSize, write: write)
        guard done == iovecs.bytes else { return nil }  // partly done or not at all: the ring does it all again
        if write { device.countRead(iovecs.bytes) }
        servedAlone &+= 1
        return (Self.statusOK, write ? 0 : iovecs.bytes)
    }

    /// One `preadv2`/`pwritev2(RWF_NOWAIT)`: the bytes done, or -1. What it shows of the file system is
    /// remembered (`nowaitReads`/`nowaitWrites`): EOPNOTSUPP means it cannot tell, anything else that it can.
    func transferNowait(_ base: UnsafePointer<iovec>, count: Int, at offset: UInt64, write: Bool) -> Int {
        let done = ckvm_rw_nowait(fd, base, Int32(count), Int64(offset), write ? 1 : 0)
        let supported = !(done < 0 && errno == EOPNOTSUPP)
        if write { nowaitWrites = supported } else { nowaitReads = supported }
        return done
    }
}
