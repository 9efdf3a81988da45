import ActorVmm
import CKvm
import Glibc

/// Writes the image's file system cannot take without blocking, served on the device's loop.
///
/// io_uring does a buffered write inline only where the file system supports async buffered writes (XFS on
/// Linux 6.1; not ext4, not tmpfs): everywhere else it hands every write to an io-wq worker thread, which
/// serialises buffered writes to one file on one worker — a thread hand-off and two wake-ups per write
/// (docs/benchmarks.md, "Where the sequential write goes"). Such a file system answers `pwritev2(RWF_NOWAIT)`
/// with `EOPNOTSUPP`; learned once per open image (the first write asks), its writes are then served with
/// `pwritev` on the loop — as the synchronous engine does, and as Firecracker's default engine does — within
/// a budget per queue turn: unlimited for a disk with a loop of its own (`--event-loops per-device` or
/// `per-queue`: a stalled write stalls only this disk, whose writes the kernel serialises on the file's lock
/// anyway) and on a VMM that may run on one CPU only (the worker's copy would take that CPU from the loop and
/// the guest all the same: the hand-off is pure cost), ``sharedLoopBytes`` on the shared loop otherwise (a
/// long write, or one the kernel throttles, stalls every device on the loop, where the worker would copy on
/// another CPU meanwhile). A write over the budget, or while a write is on the ring (it holds the file's lock:
/// the loop would wait for the worker), goes on the ring. Reads always go on the ring (page-cache hits
/// complete inside `io_uring_enter`). Only with ``VirtioBlock/Engine/auto``: `ACTOR_VMM_BLOCK_IO=io_uring`
/// puts every write on the ring, `=sync` every request on the loop. Not for `direct=on` (O_DIRECT writes are
/// truly asynchronous on the ring).
extension VirtioBlock {
    /// Inline write bytes per queue turn on the shared loop (with more than one CPU): up to one 128 KiB write
    /// — the 4 KiB random writes, not the 1 MiB sequential ones.
    public static let sharedLoopBytes = 128 << 10
    /// `ACTOR_VMM_BLOCK_INLINE_WRITES=BYTES` overrides the budget per queue turn on any loop (0: none).
    public static let inlineWritesVariable = "ACTOR_VMM_BLOCK_INLINE_WRITES"

    /// The budget per queue turn for `options` on `engine` (`.auto` after the environment was read), with
    /// `cpus` the CPUs the VMM may run on (-1: unknown).
    static func inlineWriteBudget(_ options: Options, engine: Engine, ring: Bool, environment: String?, cpus: Int) -> Int {
        guard ring, engine == .auto, !options.direct, !options.readonly else { return 0 }
        if let environment, let bytes = Int(environment), bytes >= 0 { return bytes }
        return options.loopOfItsOwn || cpus == 1 ? Int.max : sharedLoopBytes
    }

    /// Serves a write on the loop when the policy above allows it: its status, or nil to put it on the ring.
    func serveWriteInline(_ request: borrowing ChainBuffers, sector: UInt64, device: isolated VirtioPciDevice) -> UInt8? {
        guard inlineBudgetLeft > 0, nowaitWrites != true, inFlight.writes == 0 else { return nil }
        guard let iovecs = fillIovecs(request, write: true, into: &scratch, memory: device.memory),
              iovecs.bytes > 0, iovecs.bytes <= inlineBudgetLeft, checkRange(sector: sector, bytes: iovecs.bytes),
              let base = scratch.base else { return nil }
        let offset = sector * Self.sectorSize
        if nowaitWrites == nil {
            // The first write asks the file system: done without blocking (it can tell: later writes go on the
            // ring, whose own attempt does the same), would block, or cannot tell (EOPNOTSUPP: inline from now).
            let done = transferNowait(base, count: iovecs.count, at: offset, write: true)
            if done == iovecs.bytes {
                device.countRead(iovecs.bytes)
                return Self.statusOK
            }
            if nowaitWrites == true { return nil }  // partly done or not at all: the ring does it all again
        }
        inlineBudgetLeft -= iovecs.bytes
        device.countRead(iovecs.bytes)
        servedInline &+= 1
        return transfer(base, count: iovecs.count, bytes: iovecs.bytes, at: offset, write: true) ? Self.statusOK : Self.statusIOErr
    }
}
