import ActorVmm
@testable import Devices
import EpollLoop
import Testing

/// A virtio-mem device over in-memory guest RAM: 16 MiB of RAM at 0 and a 128 MiB region at 128 MiB (64
/// blocks of 2 MiB), driven through BAR0 as a driver would.
struct VirtioMemFixture {
    static let start: UInt64 = 128 << 20, size: UInt64 = 128 << 20, block: UInt64 = 2 << 20
    let memory: GuestMemory
    let device: VirtioPciDevice
    var driver: VirtioDriver

    init(loop: EventLoop, requested: UInt64 = 0) async throws {
        memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20), (GuestAddress(Self.start), Self.size)])
        let backend = try VirtioMem(start: Self.start, size: Self.size, requested: requested)
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        self.device = device
        driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 1) == 0xF)
    }

    /// A 24-byte request of `type` for `blocks` blocks at `address`: the response's type and state, and
    /// the length the device wrote.
    mutating func send(_ type: UInt16, _ address: UInt64 = 0, blocks: UInt16 = 0) async -> (type: UInt16, state: UInt16, length: UInt32) {
        let response = driver.queues[0].allocate(16, bytes: [UInt8](repeating: 0xEE, count: 16))
        return await post([(driver.queues[0].allocate(24, bytes: Self.request(type, address, blocks: blocks)), 24, false),
                           (response, 10, true)], response: response)
    }

    /// Posts `buffers` as one request and kicks; the response read at `response`.
    mutating func post(_ buffers: [(GuestAddress, UInt32, writable: Bool)], response: GuestAddress) async -> (type: UInt16, state: UInt16, length: UInt32) {
        driver.queues[0].post(buffers)
        await driver.kick(0)
        let used = driver.queues[0].takeUsed()
        #expect(used.count == 1)
        return (try! memory.read(at: response), try! memory.read(at: GuestAddress(response.rawValue + 8)), used.first?.length ?? 0xFFFF)
    }

    static func request(_ type: UInt16, _ address: UInt64, blocks: UInt16) -> [UInt8] {
        var bytes: [UInt8] = []
        appendLE(&bytes, type); bytes += [UInt8](repeating: 0xCC, count: 6)  // padding: ignored
        appendLE(&bytes, address)
        appendLE(&bytes, blocks); bytes += [UInt8](repeating: 0xCC, count: 6)
        return bytes
    }

    /// A 64-bit field of the device configuration, read as Linux does: two 32-bit halves.
    func config(_ offset: UInt64) async -> UInt64 {
        let low = await driver.r(0x2000 + offset, 4)
        let high = await driver.r(0x2000 + offset + 4, 4)
        return low | high << 32
    }
}

@Suite struct VirtioMemTests {
    static let start = VirtioMemFixture.start, block = VirtioMemFixture.block
    let ack: UInt16 = 0, nack: UInt16 = 1, error: UInt16 = 3
    let plug: UInt16 = 0, unplug: UInt16 = 1, unplugAll: UInt16 = 2, state: UInt16 = 3

    /// `struct virtio_mem_config` at BAR0 0x2000, its fields at their offsets in any width; no device
    /// feature but VERSION_1 (Cloud Hypervisor's set without a NUMA node).
    @Test func configurationLayout() async throws {
        let loop = try EventLoop(name: "t-vmem-config")
        defer { loop.shutdown() }
        let f = try await VirtioMemFixture(loop: loop, requested: 6 << 20)
        #expect(await f.config(0) == Self.block)
        #expect(await f.driver.r(0x2008, 2) == 0)  // node_id
        #expect(await f.config(16) == Self.start)
        #expect(await f.config(24) == VirtioMemFixture.size)
        #expect(await f.config(32) == VirtioMemFixture.size)  // usable: the whole region
        #expect(await f.config(40) == 0)
        #expect(await f.config(48) == 6 << 20)
        #expect(await f.driver.r(0x2030, 8) == 6 << 20)  // one 8-byte read
        await f.driver.w(0x00, 4, 0)
        #expect(await f.driver.r(0x04, 4) & 0b11 == 0)  // no ACPI_PXM, no UNPLUGGED_INACCESSIBLE
        await f.driver.w(0x00, 4, 1)
        #expect(await f.driver.r(0x04, 4) & 1 == 1)  // VERSION_1
        #expect(await f.driver.r(0x2000 + 56, 4) == 0)  // past the structure
        #expect(await f.device.configRead(offset: 0x02, width: 2) == 0x1040 + 24)
    }

    /// PLUG, STATE, UNPLUG as §5.15.6 says: NACK past requested_size, ERROR for a block in the wrong state,
    /// plugged_size follows (and config_generation with it), STATE plugged / unplugged / mixed.
    @Test func requestsAndResponses() async throws {
        let loop = try EventLoop(name: "t-vmem-requests")
        defer { loop.shutdown() }
        var f = try await VirtioMemFixture(loop: loop, requested: 4 << 20)
        let generation = await f.driver.r(0x15, 1)
        #expect(await f.send(plug, Self.start, blocks: 3) == (nack, 0, 10))
        #expect(await f.send(plug, Self.start, blocks: 2) == (ack, 0, 10))
        #expect(await f.config(40) == 4 << 20)
        #expect(await f.driver.r(0x15, 1) != generation)
        #expect(await f.send(plug, Self.start + 2 * Self.block, blocks: 1) == (nack, 0, 10))
        #expect(await f.send(state, Self.start, blocks: 2) == (ack, 0, 10))
        #expect(await f.send(state, Self.start, blocks: 3) == (ack, 2, 10))
        #expect(await f.send(state, Self.start + 2 * Self.block, blocks: 62) == (ack, 1, 10))
        #expect(await f.send(unplug, Self.start + 2 * Self.block, blocks: 1) == (error, 0, 10))
        #expect(await f.send(unplug, Self.start + Self.block, blocks: 1) == (ack, 0, 10))
        #expect(await f.config(40) == 2 << 20)
        #expect(await f.send(plug, Self.start, blocks: 1) == (error, 0, 10), "already plugged, within requested_size")
        #expect(await f.send(unplugAll) == (ack, 0, 10))
        #expect(await f.config(40) == 0)
        #expect(await f.send(state, Self.start, blocks: 64) == (ack, 1, 10))
        #expect(await f.device.counters.errors == 2)
    }

    /// Unplugged blocks give their pages back and read zero; plugged neighbours keep their data; UNPLUG_ALL
    /// zeroes the whole region and nothing outside it.
    @Test func unplugDiscardsTheBlocksMemory() async throws {
        let loop = try EventLoop(name: "t-vmem-discard")
        defer { loop.shutdown() }
        var f = try await VirtioMemFixture(loop: loop, requested: 6 << 20)
        #expect(await f.send(plug, Self.start, blocks: 3).type == ack)
        for index in 0..<3 { try f.memory.write(bytes: [UInt8](repeating: UInt8(0xA0 + index), count: 4096), at: GuestAddress(Self.start + UInt64(index) * Self.block + Self.block - 4096)) }
        try f.memory.write(bytes: [0x5A, 0x5A], at: GuestAddress((16 << 20) - 2))  // RAM just below
        #expect(await f.send(unplug, Self.start + Self.block, blocks: 1).type == ack)
        #expect(try f.memory.readBytes(at: GuestAddress(Self.start + 2 * Self.block - 4096), count: 4096).allSatisfy { $0 == 0 })
        #expect(try f.memory.readBytes(at: GuestAddress(Self.start + Self.block - 4096), count: 4096).allSatisfy { $0 == 0xA0 })
        #expect(try f.memory.readBytes(at: GuestAddress(Self.start + 3 * Self.block - 4096), count: 4096).allSatisfy { $0 == 0xA2 })
        #expect(await f.send(unplugAll).type == ack)
        #expect(try f.memory.readBytes(at: GuestAddress(Self.start + 3 * Self.block - 4096), count: 4096).allSatisfy { $0 == 0 })
        #expect(try f.memory.readBytes(at: GuestAddress((16 << 20) - 2), count: 2) == [0x5A, 0x5A])
    }

    /// A resize sets requested_size and raises the configuration interrupt (vector 0); a size past the
    /// region or off the block size is refused and changes nothing. A device reset keeps plugged blocks.
    @Test func resizeNotifiesAndResetKeepsBlocks() async throws {
        let loop = try EventLoop(name: "t-vmem-resize")
        defer { loop.shutdown() }
        var f = try await VirtioMemFixture(loop: loop)
        let before = f.driver.msi.triggers(0)
        try await f.device.resizeMemory(requested: 8 << 20)
        #expect(f.driver.msi.triggers(0) == before + 1)
        #expect(await f.config(48) == 8 << 20)
        await #expect(throws: VirtioError.self) { try await f.device.resizeMemory(requested: 130 << 20) }
        await #expect(throws: VirtioError.self) { try await f.device.resizeMemory(requested: 3 << 20) }
        #expect(await f.config(48) == 8 << 20 && f.driver.msi.triggers(0) == before + 1)
        #expect(await f.send(plug, Self.start, blocks: 4).type == ack)
        await f.driver.w(0x14, 1, 0)  // device reset
        #expect(await f.config(40) == 8 << 20)
        #expect(await f.config(48) == 8 << 20)
    }

    @Test func blockBitmap() {
        var blocks = VirtioMemBlocks(count: 130)
        #expect(blocks.all(0..<130, plugged: false) && blocks.pluggedCount == 0)
        blocks.set(62..<66, plugged: true)
        blocks.set(129..<130, plugged: true)
        #expect(blocks.isPlugged(63) && blocks.isPlugged(64) && !blocks.isPlugged(66))
        #expect(blocks.pluggedCount == 5 && blocks.pluggedRuns == [62..<66, 129..<130])
        #expect(!blocks.all(60..<64, plugged: true) && blocks.all(62..<66, plugged: true))
        blocks.set(63..<64, plugged: false)
        #expect(blocks.pluggedRuns == [62..<63, 64..<66, 129..<130])
        #expect(VirtioMemBlocks(count: 130, words: blocks.words) == blocks)
        #expect(VirtioMemBlocks(count: 130, words: [0, 0, 1 << 2]) == nil, "a bit past the last block")
        #expect(VirtioMemBlocks(count: 130, words: [0, 0]) == nil)
        blocks.clear()
        #expect(blocks.pluggedCount == 0)
    }

    /// The backend's snapshot: sizes and bitmap come back; another region, sizes off the block size or a
    /// bitmap that disagrees with plugged_size are refused before anything changes.
    @Test func snapshotState() throws {
        let a = try VirtioMem(start: Self.start, size: 128 << 20, requested: 8 << 20)
        #expect(a.changeState(address: Self.start + 10 * Self.block, blocks: 3, plug: true, memory: testMemory()) == 0)
        let state = a.captureState()
        let b = try VirtioMem(start: Self.start, size: 128 << 20)
        try b.restoreState(state)
        #expect(b.blocks == a.blocks && b.pluggedSize == 6 << 20 && b.requestedSize == 8 << 20 && b.status.plugged.load(ordering: .relaxed) == 6 << 20)
        #expect(throws: SnapshotError.self) { try VirtioMem(start: Self.start, size: 256 << 20).restoreState(state) }
        var lying = state
        lying[34] = 0x40  // plugged_size (the fifth u64) 6 MiB → 4 MiB: three blocks in the bitmap disagree
        #expect(throws: SnapshotError.self) { try b.restoreState(lying) }
        #expect(b.pluggedSize == 6 << 20)
        #expect(throws: SnapshotError.self) { try b.restoreState(Array(state.dropLast())) }
    }
}
