import ActorVmm
@testable import Devices
import EpollLoop
import Glibc
import Synchronization
import Testing

/// A scratch file that is removed at the end of the test.
final class TempFile {
    let path: String
    init(size: Int, fill: UInt8 = 0) {
        path = "/tmp/actor-vmm-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).raw"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        let bytes = [UInt8](repeating: fill, count: size)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, size) }
        close(fd)
    }
    func contents() -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        _ = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return bytes
    }
    deinit { unlink(path) }
}

@Suite struct VirtioPciTransportTests {
    @Test func configSpaceDescribesAModernVirtioDevice() async throws {
        let loop = try EventLoop(name: "t-pci")
        defer { loop.shutdown() }
        let (device, _) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: testMemory(), loop: loop)
        #expect(await device.configRead(offset: 0, width: 4) == 0x1044_1AF4)
        #expect(await device.configRead(offset: 0x08, width: 1) == 1)  // revision 1: modern only
        #expect(await device.configRead(offset: 0x06, width: 2) & 0x10 != 0)  // capabilities list
        #expect(await device.configRead(offset: 0x3D, width: 1) == 0)  // no INTx pin
        // Walk the capability list: MSI-X then common, notify, ISR, device, PCI configuration access.
        var caps: [(UInt64, UInt64)] = []
        var pointer = await device.configRead(offset: 0x34, width: 1)
        while pointer != 0 && caps.count < 10 {
            let id = await device.configRead(offset: pointer, width: 1)
            let type = id == 9 ? await device.configRead(offset: pointer + 3, width: 1) : 0
            caps.append((id, type))
            pointer = await device.configRead(offset: pointer + 1, width: 1)
        }
        #expect(caps.map { $0.0 } == [0x11, 9, 9, 9, 9, 9])
        #expect(caps.map { $0.1 } == [0, 1, 2, 3, 4, 5])
        #expect(await device.configRead(offset: 0x42, width: 2) & 0x7FF == 1)  // 2 vectors
        #expect(await device.configRead(offset: 0x44, width: 4) == 0x4000)     // table at BAR0 + 0x4000
        #expect(await device.configRead(offset: 0x6C, width: 4) == 4)          // notify_off_multiplier
    }

    @Test func barSizingReadsBackTheSizeMask() async throws {
        let loop = try EventLoop(name: "t-bar")
        defer { loop.shutdown() }
        let (device, _) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: testMemory(), loop: loop)
        #expect(await device.configRead(offset: 0x10, width: 4) == 0xC000_0004)
        await device.configWrite(offset: 0x10, width: 4, value: 0xFFFF_FFFF)
        await device.configWrite(offset: 0x14, width: 4, value: 0xFFFF_FFFF)
        #expect(await device.configRead(offset: 0x10, width: 4) == 0xFFFF_8004)  // 32 KiB, 64-bit
        #expect(await device.configRead(offset: 0x14, width: 4) == 0xFFFF_FFFF)
        await device.configWrite(offset: 0x10, width: 4, value: 0xC000_0000)
        await device.configWrite(offset: 0x14, width: 4, value: 0)
        #expect(await device.configRead(offset: 0x10, width: 4) == 0xC000_0004)
        // Read-only identity survives writes.
        await device.configWrite(offset: 0, width: 4, value: 0)
        #expect(await device.configRead(offset: 0, width: 4) == 0x1044_1AF4)
    }

    @Test func bar0IsSilentUntilMemoryDecodingIsEnabled() async throws {
        let loop = try EventLoop(name: "t-decode")
        defer { loop.shutdown() }
        let (device, _) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: testMemory(), loop: loop)
        // All-ones in the access's width only (found by the virtio_pci fuzz target: a 2-byte read gave 64 ones).
        #expect(await device.read(offset: 0x12, width: 2) == 0xFFFF)
        #expect(await device.read(offset: 0x14, width: 1) == 0xFF)
        #expect(await device.read(offset: 0x00, width: 4) == 0xFFFF_FFFF)
        #expect(await device.read(offset: 0x20, width: 8) == ~0)
        await device.configWrite(offset: 0x04, width: 2, value: 0x2)
        #expect(await device.read(offset: 0x12, width: 2) == 1)  // num_queues
    }

    @Test func featuresOKNeedsVersion1AndASubset() async throws {
        let loop = try EventLoop(name: "t-feat")
        defer { loop.shutdown() }
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: testMemory(), loop: loop)
        let driver = VirtioDriver(device: device, memory: testMemory(), msi: msi)
        await device.configWrite(offset: 0x04, width: 2, value: 0x2)
        await driver.w(0x00, 4, 1)
        #expect(await driver.r(0x04, 4) & 1 == 1)  // VERSION_1 offered (bit 32)
        await driver.w(0x00, 4, 0)
        #expect(await driver.r(0x04, 4) & (3 << 28) == 3 << 28)  // INDIRECT_DESC, EVENT_IDX
        // Without VERSION_1: FEATURES_OK does not stick.
        await driver.w(0x14, 1, 3)
        await driver.w(0x14, 1, 0xB)
        #expect(await driver.r(0x14, 1) & 0x8 == 0)
        // With an unknown feature bit: refused too.
        await driver.w(0x14, 1, 0)
        await driver.w(0x08, 4, 1)
        await driver.w(0x0C, 4, 1 | 2)
        await driver.w(0x14, 1, 0xB)
        #expect(await driver.r(0x14, 1) & 0x8 == 0)
        // VERSION_1 alone: accepted.
        await driver.w(0x14, 1, 0)
        await driver.w(0x08, 4, 1)
        await driver.w(0x0C, 4, 1)
        await driver.w(0x14, 1, 0xB)
        #expect(await driver.r(0x14, 1) == 0xB)
    }

    @Test func rngServesRequestsAndInterruptsThroughMsix() async throws {
        let loop = try EventLoop(name: "t-rng")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        #expect(msi.routes.withLock { $0[msi.allocated.withLock { $0[1].gsi }]?.data } == 0x41)
        let buffer = driver.queues[0].allocate(64)
        driver.queues[0].post([(buffer, 64, true)])
        await driver.kick(0)
        let used = driver.queues[0].takeUsed()
        #expect(used.map { $0.length } == [64])
        let bytes = try memory.readBytes(at: buffer, count: 64)
        #expect(Set(bytes).count > 8)
        #expect(msi.triggers(1) == 1)
        #expect(await device.counters.requests == 1)
    }

    @Test func maskedVectorsArePendingUntilUnmasked() async throws {
        let loop = try EventLoop(name: "t-mask")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        await driver.w(0x4000 + 16 + 12, 4, 1)  // mask vector 1
        driver.queues[0].post([(driver.queues[0].allocate(16), 16, true)])
        await driver.kick(0)
        #expect(msi.triggers(1) == 0)
        #expect(await driver.r(0x5000, 8) == 0b10)  // PBA bit 1
        await driver.w(0x4000 + 16 + 12, 4, 0)  // unmask: the pending interrupt is delivered
        #expect(msi.triggers(1) == 1)
        #expect(await driver.r(0x5000, 8) == 0)
    }

    @Test func corruptRingSetsNeedsResetAndResetRecovers() async throws {
        let loop = try EventLoop(name: "t-reset")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        try memory.write(UInt16(500), at: GuestAddress(driver.queues[0].avail.rawValue + 2))
        await driver.kick(0)
        #expect(await driver.r(0x14, 1) & 0x40 != 0)  // DEVICE_NEEDS_RESET
        #expect(msi.triggers(0) == 1)                 // configuration interrupt
        await driver.w(0x14, 1, 0)
        #expect(await driver.r(0x14, 1) == 0)
        driver.queues = []
        #expect(await driver.initialize(queueCount: 1) == 0xF)
    }

    @Test func queueWithBadAddressesIsNotEnabled() async throws {
        let loop = try EventLoop(name: "t-badq")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: memory, loop: loop)
        let driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await device.configWrite(offset: 0x04, width: 2, value: 0x6)
        await driver.w(0x14, 1, 3)
        await driver.w(0x08, 4, 1)
        await driver.w(0x0C, 4, 1)
        await driver.w(0x14, 1, 0xB)
        await driver.w(0x16, 2, 0)
        await driver.w(0x20, 8, 0xFFFF_FFFF_0000)  // outside RAM
        await driver.w(0x1C, 2, 1)
        #expect(await driver.r(0x1C, 2) == 0)
        #expect(await driver.r(0x14, 1) & 0x40 != 0)
    }
}
