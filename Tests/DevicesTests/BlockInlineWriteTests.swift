import ActorVmm
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// The write policy of the default engine (Sources/Devices/Block/BlockInlineWrites.swift): writes the image's
/// file system cannot take without blocking are served on the device's loop within a budget per queue turn,
/// everything else goes on the ring.
@Suite struct BlockInlineWriteTests {
    /// The budget: 128 KiB per turn on the shared loop, unlimited on a loop of its own or with one CPU, none
    /// when the ring is asked for (or missing), for `direct=on` or a read-only disk; the environment overrides it.
    @Test func theBudgetFollowsTheLoopAndTheEngine() {
        let shared = VirtioBlock.Options(path: "x"), own = VirtioBlock.Options(path: "x", loopOfItsOwn: true)
        #expect(VirtioBlock.inlineWriteBudget(shared, engine: .auto, ring: true, environment: nil, cpus: 2) == 128 << 10)
        #expect(VirtioBlock.inlineWriteBudget(own, engine: .auto, ring: true, environment: nil, cpus: 2) == Int.max)
        #expect(VirtioBlock.inlineWriteBudget(own, engine: .ioUring, ring: true, environment: nil, cpus: 2) == 0)
        #expect(VirtioBlock.inlineWriteBudget(own, engine: .auto, ring: false, environment: nil, cpus: 2) == 0)
        #expect(VirtioBlock.inlineWriteBudget(.init(path: "x", direct: true), engine: .auto, ring: true, environment: nil, cpus: 2) == 0)
        #expect(VirtioBlock.inlineWriteBudget(.init(path: "x", readonly: true), engine: .auto, ring: true, environment: nil, cpus: 2) == 0)
        #expect(VirtioBlock.inlineWriteBudget(own, engine: .auto, ring: true, environment: "0", cpus: 2) == 0)
        #expect(VirtioBlock.inlineWriteBudget(shared, engine: .auto, ring: true, environment: "4096", cpus: 1) == 4096)
        #expect(VirtioBlock.inlineWriteBudget(shared, engine: .auto, ring: true, environment: "", cpus: -1) == 128 << 10)
        // One CPU for the VMM: the worker's copy would take it from the loop anyway.
        #expect(VirtioBlock.inlineWriteBudget(shared, engine: .auto, ring: true, environment: nil, cpus: 1) == Int.max)
        #expect(VirtioBlock.inlineWriteBudget(shared, engine: .ioUring, ring: true, environment: nil, cpus: 1) == 0)
    }

    /// Four 4 KiB writes in one doorbell on the shared loop: all served on the loop (the first asks the file
    /// system and learns it cannot tell), none through the ring; the file has their bytes.
    @Test func smallWritesAreServedOnTheLoop() async throws {
        guard let (loop, file, _, driverValue, _) = try await setUp("t-blk-inline", engine: .auto) else { return }
        defer { loop.shutdown() }
        var driver = driverValue
        var q = driver.queues[0]
        for index in 0..<4 {
            let data = q.allocate(4096, bytes: [UInt8](repeating: UInt8(0x40 + index), count: 4096))
            q.postBlock(type: 1, sector: UInt64(index) * 8, data: (data, 4096))
        }
        driver.queues[0] = q
        await driver.kick(0)
        #expect(await driver.awaitUsed(queue: 0, count: 4).count == 4)
        #expect(await driver.device.inlineCounts() == .init(inline: 4, nowaitWrites: false))
        let contents = file.contents()
        for index in 0..<4 { #expect(contents[(index * 4096)..<((index + 1) * 4096)].allSatisfy { $0 == UInt8(0x40 + index) }) }
    }

    /// On the shared loop (of a VMM with more than one CPU) a 1 MiB write is over the budget and goes on the
    /// ring, and so does the 4 KiB write after it in the same doorbell (the ring's write holds the file's
    /// lock); on a loop of its own both are served on the loop; with the ring asked for (`io_uring`) neither.
    @Test(arguments: [(false, VirtioBlock.Engine.auto, UInt64(0)), (true, .auto, 2), (true, .ioUring, 0)])
    func largeWritesAndWritesBehindTheRingGoOnTheRing(ownLoop: Bool, engine: VirtioBlock.Engine, inline: UInt64) async throws {
        guard let (loop, file, _, driverValue, _) = try await setUp("t-blk-inline-big", engine: engine, ownLoop: ownLoop, size: 4 << 20) else { return }
        defer { loop.shutdown() }
        var driver = driverValue
        // The file system is asked once by a write alone (with the ring asked for, nothing asks).
        #expect(await driver.blockRequest(type: 1, sector: 0, data: [UInt8](repeating: 1, count: 512)).status == 0)
        var q = driver.queues[0]
        let big = q.allocate(1 << 20, bytes: [UInt8](repeating: 0x77, count: 1 << 20))
        let small = q.allocate(4096, bytes: [UInt8](repeating: 0x88, count: 4096))
        q.postBlock(type: 1, sector: 2048, data: (big, 1 << 20))
        q.postBlock(type: 1, sector: 8, data: (small, 4096))
        driver.queues[0] = q
        await driver.kick(0)
        #expect(await driver.awaitUsed(queue: 0, count: 2).count == 2)
        let counts = await driver.device.inlineCounts()
        // With one CPU for the VMM the shared loop has no budget either (as on a loop of its own).
        let expected = engine == .auto && ckvm_usable_cpus() == 1 ? 2 : inline
        #expect(counts.inline == expected + (engine == .auto ? 1 : 0), "the first write alone is served on the loop too")
        let contents = file.contents()
        #expect(contents[(1 << 20)..<(2 << 20)].allSatisfy { $0 == 0x77 })
        #expect(contents[4096..<8192].allSatisfy { $0 == 0x88 })
    }

    /// A device on `engine` over a fresh file on /tmp; nil (with the reason printed) when this host has no
    /// io_uring, `ACTOR_VMM_BLOCK_IO` is set, or the file system takes `RWF_NOWAIT` writes (then nothing is
    /// served inline, as designed).
    func setUp(_ name: String, engine: VirtioBlock.Engine, ownLoop: Bool = false, size: Int = 64 * 1024) async throws
        -> (EventLoop, TempFile, GuestMemory, VirtioDriver, VirtioBlock.Engine)? {
        if getenv(VirtioBlock.ioEngineVariable) != nil || getenv(VirtioBlock.inlineWritesVariable) != nil {
            print("skipped: \(VirtioBlock.ioEngineVariable) or \(VirtioBlock.inlineWritesVariable) is set")
            return nil
        }
        let file = TempFile(size: size)
        guard Self.fileSystemCannotTell(file.path) else {
            print("skipped: /tmp takes RWF_NOWAIT buffered writes: nothing is served inline there")
            return nil
        }
        let backend = try VirtioBlock(options: .init(path: file.path, engine: engine, loopOfItsOwn: ownLoop))
        guard backend.engine == .ioUring else {
            print("skipped: io_uring is unavailable on this host")
            return nil
        }
        let loop = try EventLoop(name: name)
        let memory = testMemory(mebibytes: 8)
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        guard await driver.initialize(queueCount: 1) == 0xF else { return nil }
        return (loop, file, memory, driver, engine)
    }

    /// `pwritev2(RWF_NOWAIT)` on `path` answers EOPNOTSUPP (ext4, tmpfs).
    static func fileSystemCannotTell(_ path: String) -> Bool {
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        var byte: UInt8 = 0
        return withUnsafeMutablePointer(to: &byte) { pointer in
            var vector = iovec(iov_base: pointer, iov_len: 1)
            return ckvm_rw_nowait(fd, &vector, 1, 0, 1) < 0 && errno == EOPNOTSUPP
        }
    }
}

struct InlineCounts: Equatable { var inline: UInt64; var nowaitWrites: Bool? }

extension VirtioPciDevice {
    /// Writes the block backend served on its loop, and what it learned of the file system.
    func inlineCounts() -> InlineCounts {
        let block = backend as? VirtioBlock
        return InlineCounts(inline: block?.servedInline ?? 0, nowaitWrites: block?.nowaitWrites)
    }
}
