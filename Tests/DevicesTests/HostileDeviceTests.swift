import ActorVmm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// What a hostile or broken driver can do to each virtio device type (issue 12, items 8 and 9), without KVM.
@Suite struct HostileDeviceTests {
    func segment(sector: UInt64, count: UInt32, flags: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        appendLE(&bytes, sector); appendLE(&bytes, count); appendLE(&bytes, flags)
        return bytes
    }

    /// virtio 1.2 §5.2.6.2: DISCARD with `unmap`, or DISCARD / WRITE_ZEROES with an unknown flag, is
    /// UNSUPP, and nothing is done; WRITE_ZEROES with `unmap` is allowed.
    @Test func discardAndWriteZeroesFlags() async throws {
        let loop = try EventLoop(name: "t-blk-flags")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024, fill: 0xAB)
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioBlock(options: .init(path: file.path)), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        #expect(await driver.blockRequest(type: 11, sector: 0, extraReadable: segment(sector: 0, count: 8, flags: 1)).status == 2)
        #expect(await driver.blockRequest(type: 11, sector: 0, extraReadable: segment(sector: 0, count: 8, flags: 2)).status == 2)
        #expect(await driver.blockRequest(type: 13, sector: 0, extraReadable: segment(sector: 0, count: 8, flags: 4)).status == 2)
        // One bad segment among good ones: UNSUPP, and the good ones are not carried out either.
        let mixed = segment(sector: 0, count: 8, flags: 0) + segment(sector: 8, count: 8, flags: 0x8000_0000)
        #expect(await driver.blockRequest(type: 13, sector: 0, extraReadable: mixed).status == 2)
        #expect(file.contents().allSatisfy { $0 == 0xAB })
        #expect(await driver.blockRequest(type: 13, sector: 0, extraReadable: segment(sector: 0, count: 2, flags: 1)).status == 0)
        #expect(file.contents()[0..<1024].allSatisfy { $0 == 0 })
    }

    /// The config announces the real limits: SIZE_MAX and SEG_MAX with values whose product the device
    /// serves, so only a request over the announced limits fails.
    @Test func blockAnnouncesItsRequestLimits() async throws {
        let loop = try EventLoop(name: "t-blk-limits")
        defer { loop.shutdown() }
        let file = TempFile(size: 0)
        #expect(truncate(file.path, 32 << 20) == 0)
        let memory = testMemory(mebibytes: 48)
        let (device, msi) = try makeDevice(try VirtioBlock(options: .init(path: file.path)), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(features: 1 << 1 | 1 << 2, queueSize: 128, queueCount: 1) == 0xF)
        let sizeMax = Int(await driver.r(0x2008, 4)), segMax = Int(await driver.r(0x200C, 4))
        #expect(sizeMax > 0 && segMax > 0)
        // max_discard_sectors, max_discard_seg, max_write_zeroes_sectors, max_write_zeroes_seg
        for offset: UInt64 in [0x2024, 0x2028, 0x2030, 0x2034] { #expect(await driver.r(offset, 4) > 0) }
        #expect(await driver.r(0x04, 4) & 0b110 == 0b110)  // SIZE_MAX and SEG_MAX offered

        // The largest request the announced limits allow: seg_max segments of size_max bytes.
        var q = driver.queues[0]
        var header: [UInt8] = []
        appendLE(&header, UInt32(0)); appendLE(&header, UInt32(0)); appendLE(&header, UInt64(0))
        var buffers: [(GuestAddress, UInt32, writable: Bool)] = [(q.allocate(16, bytes: header), 16, false)]
        for _ in 0..<segMax { buffers.append((q.allocate(sizeMax), UInt32(sizeMax), true)) }
        let status = q.allocate(1, bytes: [0xEE])
        buffers.append((status, 1, true))
        q.post(buffers)
        driver.queues[0] = q
        await driver.kick(0)
        #expect(await driver.awaitUsed(queue: 0).map { $0.length } == [UInt32(segMax * sizeMax + 1)])
        #expect(try memory.read(at: status) as UInt8 == 0)
        // Past what a request may carry (16 MiB): IOERR.
        #expect(await driver.blockRequest(type: 0, sector: 0, readLength: (16 << 20) + 512).status == 1)
    }

    /// A receive buffer that is read-only or too small for the frame is returned used with length 0 and
    /// counted; the frame goes to the next buffer, and receive goes on.
    @Test func badReceiveBuffersDoNotStopNetReceive() async throws {
        let loop = try EventLoop(name: "t-net-rx")
        defer { loop.shutdown() }
        let (peer, device, memory, driver0) = try fakeTapNetDriver(loop: loop)
        defer { close(peer) }
        var driver = driver0
        #expect(await driver.initialize(queueCount: 2) == 0xF)
        func inject(_ marker: UInt8) {
            let frame = [UInt8](repeating: 0, count: 12) + [UInt8](repeating: marker, count: 60)
            _ = frame.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, 0) }
        }
        inject(0xA1)
        var q = driver.queues[0]
        let readOnly = q.post([(q.allocate(1526), 1526, false)])
        let tooSmall = q.post([(q.allocate(40), 40, true)])
        let goodBuffer = q.allocate(1526)
        let good = q.post([(goodBuffer, 1526, true)])
        driver.queues[0] = q
        await driver.kick(0)
        var used = driver.queues[0].takeUsed()
        #expect(used.map { $0.head } == [UInt32(readOnly), UInt32(tooSmall), UInt32(good)])
        #expect(used.map { $0.length } == [0, 0, 72])
        #expect(try memory.readBytes(at: goodBuffer, count: 72).last == 0xA1)
        #expect(await device.assumeIsolatedRxBadBuffers() == 2)
        // Receive goes on.
        let next = driver.queues[0].allocate(1526)
        driver.queues[0].post([(next, 1526, true)])
        await driver.kick(0)
        inject(0xB2)
        used = []
        for _ in 0..<400 where used.isEmpty {
            used = driver.queues[0].takeUsed()
            if used.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(used.map { $0.length } == [72])
        #expect(try memory.readBytes(at: next, count: 72).last == 0xB2)
    }

    /// Console output is written whole, however long the guest's buffer.
    @Test func consoleOutputIsNotCut() async throws {
        let loop = try EventLoop(name: "t-con-big")
        defer { loop.shutdown() }
        let memory = testMemory()
        let output = CaptureOutput()
        let (device, msi) = try makeDevice(VirtioConsole(output: output, inputFD: nil), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 2)
        let text = (0..<(200 * 1024)).map { UInt8(truncatingIfNeeded: $0 % 251) }
        var q = driver.queues[1]
        q.post([(q.allocate(100 * 1024, bytes: Array(text[..<(100 * 1024)])), 100 * 1024, false),
                (q.allocate(100 * 1024, bytes: Array(text[(100 * 1024)...])), 100 * 1024, false)])
        driver.queues[1] = q
        await driver.kick(1)
        #expect(output.bytes.withLock { $0 } == text)
    }

    /// VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): the configuration-space window reads and writes BAR0.
    @Test func pciConfigurationAccessCapabilityReachesBar0() async throws {
        let loop = try EventLoop(name: "t-pcicfg")
        defer { loop.shutdown() }
        let (device, _) = try makeDevice(try VirtioRng(path: "/dev/urandom"), memory: testMemory(), loop: loop)
        var cap: UInt64 = 0
        var pointer = await device.configRead(offset: 0x34, width: 1)
        while pointer != 0 {
            if await device.configRead(offset: pointer, width: 1) == 9, await device.configRead(offset: pointer + 3, width: 1) == 5 {
                cap = pointer
            }
            pointer = await device.configRead(offset: pointer + 1, width: 1)
        }
        #expect(cap != 0)
        #expect(await device.configRead(offset: cap + 2, width: 1) == 20)  // cap_len
        func window(_ offset: UInt32, length: UInt32) async {
            await device.configWrite(offset: cap + 4, width: 1, value: 0)  // bar 0
            await device.configWrite(offset: cap + 8, width: 4, value: UInt64(offset))
            await device.configWrite(offset: cap + 12, width: 4, value: UInt64(length))
        }
        await window(0x12, length: 2)  // num_queues
        #expect(await device.configRead(offset: cap + 16, width: 2) == 1)
        await window(0x00, length: 4)  // device_feature_select := 1
        await device.configWrite(offset: cap + 16, width: 4, value: 1)
        await window(0x04, length: 4)  // device_feature: bits 32–63, VERSION_1 is bit 0
        #expect(await device.configRead(offset: cap + 16, width: 4) & 1 == 1)
        // A misaligned window does nothing: pci_cfg_data keeps what was written.
        await window(0x13, length: 2)
        await device.configWrite(offset: cap + 16, width: 4, value: 0xDEAD)
        #expect(await device.configRead(offset: cap + 16, width: 4) == 0xDEAD)
    }
}

extension VirtioPciDevice {
    /// The net backend's count of bad receive buffers.
    func assumeIsolatedRxBadBuffers() -> UInt64 { (backend as? VirtioNet)?.rxBadBuffers ?? 0 }
}

@Suite struct ReceiveNotificationTests {
    /// With EVENT_IDX, a receive queue that runs dry asks the driver to notify when it posts more
    /// (`avail_event` = what the device has seen); otherwise a driver that follows `avail_event` never
    /// rings again and receive stops for good.
    @Test func dryReceiveQueueAsksForANotification() async throws {
        let loop = try EventLoop(name: "t-net-evidx")
        defer { loop.shutdown() }
        let (peer, _, memory, driver0) = try fakeTapNetDriver(loop: loop)
        defer { close(peer) }
        var driver = driver0
        #expect(await driver.initialize(features: 1 << 29, queueCount: 2) == 0xF)  // EVENT_IDX
        for _ in 0..<3 { driver.queues[0].post([(driver.queues[0].allocate(1526), 1526, true)]) }
        for marker: UInt8 in [1, 2, 3, 4] {
            let frame = [UInt8](repeating: 0, count: 12) + [UInt8](repeating: marker, count: 60)
            _ = frame.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, 0) }
        }
        await driver.kick(0)
        #expect(driver.queues[0].takeUsed().count == 3)
        let q = driver.queues[0]
        let availEvent: UInt16 = try memory.read(at: GuestAddress(q.used.rawValue + 4 + 8 * UInt64(q.size)))
        #expect(availEvent == 3)
    }
}

/// A virtio-net device over ``fakeTapNet()`` on `loop` in 16 MiB of test memory, and a driver for it that
/// has not initialised it yet: where the net tests of hostile guests start. The caller closes `peer`.
func fakeTapNetDriver(loop: EventLoop) throws -> (peer: Int32, device: VirtioPciDevice, memory: GuestMemory, driver: VirtioDriver) {
    let (backend, peer) = try fakeTapNet()
    let memory = testMemory()
    do {
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        return (peer, device, memory, VirtioDriver(device: device, memory: memory, msi: msi))
    } catch {
        close(peer)
        throw error
    }
}

/// A virtio-net backend whose "TAP" is one end of a datagram socketpair (each send is one frame); the other
/// end, returned as `peer`, is the host side for the test (the caller closes it).
func fakeTapNet() throws -> (backend: VirtioNet, peer: Int32) {
    var pair: [Int32] = [0, 0]
    try #require(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &pair) == 0)
    let options = VirtioNet.Options(tap: "fake", mac: [2, 0, 0, 0, 0, 1])
    return (VirtioNet(VirtioNet.Opened(tap: TapDevice(adopting: pair[0], name: "fake"), options: options)), pair[1])
}
