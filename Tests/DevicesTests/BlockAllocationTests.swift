import ActorVmm
import CAllocCount
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// The virtio-blk request path and the register reads allocate nothing once warm: malloc calls (every Swift
/// array, class instance and boxed closure is one) counted on the device's thread while it serves requests
/// and answers register reads, both I/O paths.
@Suite struct BlockAllocationTests {
    @Test(arguments: BlockEngineTests.engines) func requestsAndRegisterReadsAllocateNothing(engine: VirtioBlock.Engine) async throws {
        #if DEBUG
        // Unoptimised code allocates where the optimiser would not (coroutine frames of unspecialised
        // generic accessors, e.g. iterating GuestMemory's regions): only an optimised build can tell.
        print("skipped: allocation counts need an optimised build (swift test -c release --filter BlockAllocationTests)")
        return
        #else
        let loop = try EventLoop(name: "t-blk-alloc")
        defer { loop.shutdown() }
        let file = TempFile(size: 1 << 20, fill: 0x3C)
        let memory = testMemory()
        guard var (driver, _) = try BlockEngineTests().makeBlock(engine, file: file, memory: memory, loop: loop) else { return }
        #expect(await driver.initialize(queueSize: 128, queueCount: 1) == 0xF)
        var q = driver.queues[0]
        let data = q.allocate(4096, bytes: [UInt8](repeating: 0x3C, count: 4096))
        let cursor = q.dataCursor
        var allocations: [UInt64] = []
        for round in 0..<4 {
            // 32 requests per doorbell, as the benchmark's QD 32: reads and writes of 4 KiB, a flush.
            for index in 0..<32 {
                let type: UInt32 = index == 31 ? 4 : UInt32(index % 2)
                q.postBlock(type: type, sector: UInt64(index * 8), data: type == 4 ? nil : (data, 4096))
            }
            q.nextDescriptor = 0
            q.dataCursor = cursor  // the same headers and status bytes next round
            driver.queues[0] = q
            allocations.append(await driver.device.countingAllocations { device in
                device.queueNotified(0)
                (device.backend as? VirtioBlock)?.settle(device: device)
                for offset: UInt64 in [0x00, 0x04, 0x12, 0x14, 0x18, 0x20, 0x2000, 0x2008, 0x2022] {
                    _ = device.read(offset: offset, width: 2)
                }
            })
            #expect(driver.queues[0].takeUsed().count == 32, "round \(round)")
            q = driver.queues[0]
        }
        #expect(await driver.device.counters.errors == 0)
        // The first round grows the reused storage; after that, nothing.
        #expect(allocations.dropFirst().allSatisfy { $0 == 0 }, "allocations per round: \(allocations)")
        #endif
    }
}

extension VirtioPciDevice {
    /// Runs `body` on the device's thread, inside the actor, counting that thread's allocations.
    func countingAllocations(_ body: @Sendable (isolated VirtioPciDevice) -> Void) -> UInt64 {
        alloc_count_begin()
        body(self)
        return alloc_count_end()
    }
}

extension VirtioBlock {
    /// Completes everything on the ring now (waits for the kernel): the test's stand-in for the eventfd.
    func settle(device: isolated VirtioPciDevice) {
        guard let ring else { return }
        while inFlight.count > 0 {
            ring.submit(wait: 1)
            reapCompletions(device: device)
        }
    }
}
