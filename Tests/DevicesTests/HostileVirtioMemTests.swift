import ActorVmm
@testable import Devices
import EpollLoop
import Testing

/// What a hostile or broken driver can do to virtio-mem: ranges that overflow, leave the region, reach into
/// RAM or are misaligned are ERROR (never a host access outside the region); chains without the request's
/// 24 readable bytes or room for the 10-byte response are returned unused and counted; the device goes on.
extension HostileDeviceTests {
    @Test func virtioMemRefusesBadRanges() async throws {
        let loop = try EventLoop(name: "t-vmem-hostile")
        defer { loop.shutdown() }
        let start = VirtioMemFixture.start, block = VirtioMemFixture.block, end = start + VirtioMemFixture.size
        var f = try await VirtioMemFixture(loop: loop, requested: VirtioMemFixture.size)
        try f.memory.write(bytes: [UInt8](repeating: 0x77, count: 4096), at: GuestAddress((16 << 20) - 4096))
        let error: UInt16 = 3
        for type: UInt16 in [0, 1, 3] {  // PLUG, UNPLUG, STATE
            for (address, blocks) in [(start + 4096, UInt16(1)), (start + 1, 1), (start, 0), (end, 1), (end - block, 2),
                                      (start - block, 1), (0, 1), ((16 << 20) - block, 1), (UInt64.max & ~(block - 1), 0xFFFF),
                                      (UInt64.max - 4095, 1), (start, 0xFFFF)] {
                let answer = await f.send(type, address, blocks: blocks)
                // A PLUG beyond requested_size is NACK before its range is looked at (Cloud Hypervisor, QEMU).
                let expected: UInt16 = type == 0 && UInt64(blocks) * block > VirtioMemFixture.size ? 1 : error
                #expect(answer.type == expected && answer.length == 10, "type \(type) at \(hex(address)) × \(blocks): \(answer)")
            }
        }
        for type: UInt16 in [4, 0x7FFF, 0xFFFF] { #expect(await f.send(type, start, blocks: 1).type == error) }
        #expect(try f.memory.readBytes(at: GuestAddress((16 << 20) - 4096), count: 4096).allSatisfy { $0 == 0x77 }, "RAM untouched")
        #expect(await f.config(40) == 0)
        // Still serving: the whole region plugs, states and unplugs.
        #expect(await f.send(0, start, blocks: 64).type == 0)
        #expect(await f.send(3, start, blocks: 64) == (0, 0, 10))
        #expect(await f.send(1, start, blocks: 64).type == 0)
    }

    @Test func virtioMemReturnsOddChainsUnused() async throws {
        let loop = try EventLoop(name: "t-vmem-chains")
        defer { loop.shutdown() }
        let start = VirtioMemFixture.start
        var f = try await VirtioMemFixture(loop: loop, requested: 4 << 20)
        let plug = VirtioMemFixture.request(0, start, blocks: 1)
        func buffer(_ bytes: [UInt8]) -> GuestAddress { f.driver.queues[0].allocate(bytes.count, bytes: bytes) }
        let response = f.driver.queues[0].allocate(16, bytes: [UInt8](repeating: 0xEE, count: 16))
        // No response buffer; a short request; a short response buffer; the response before the request.
        #expect(await f.post([(buffer(plug), 24, false)], response: response).length == 0)
        #expect(await f.post([(buffer(Array(plug[..<16])), 16, false), (response, 10, true)], response: response).length == 0)
        #expect(await f.post([(buffer(plug), 24, false), (response, 9, true)], response: response).length == 0)
        #expect(await f.post([(response, 10, true), (buffer(plug), 24, false)], response: response).length == 0)
        // A response buffer outside guest RAM: the queue refuses the chain.
        #expect(await f.post([(buffer(plug), 24, false), (GuestAddress(1 << 40), 10, true)], response: response).length == 0)
        #expect(try f.memory.readBytes(at: response, count: 10).allSatisfy { $0 == 0xEE }, "no response written")
        #expect(await f.config(40) == 0, "nothing plugged")
        #expect(await f.device.counters.errors >= 5)
        // A request split over two readable buffers, and a larger response buffer, are fine.
        let split = await f.post([(buffer(Array(plug[..<12])), 12, false), (buffer(Array(plug[12...])), 12, false),
                                  (response, 16, true)], response: response)
        #expect(split == (0, 0, 10))
        #expect(await f.config(40) == 2 << 20)
    }
}
