import ActorVmm
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// What a hostile virtio-net driver can do with headers, buffers and control requests: each bad request
/// comes back (length 0 or VIRTIO_NET_ERR), is counted, and the device goes on (docs/devices.md).
@Suite struct NetHostileTests {
    /// Headers the kernel refuses (an unknown GSO type, a checksum offset past the frame), a request
    /// shorter than a header and a huge GSO size: each request is returned and the refused ones are
    /// counted as dropped; a good frame after them goes out.
    @Test(.enabled(if: canCreateTaps, "needs /dev/net/tun and root"))
    func refusedHeadersAreDroppedAndCounted() async throws {
        let loop = try EventLoop(name: "t-net-txbad")
        defer { loop.shutdown() }
        var (driver, device, _, name) = try await NetOffloadTests.start(
            "x", features: NetFeature.csum | NetFeature.hostTso4, loop: loop)
        let host = try PacketSocket(interface: name)
        func frame(_ port: UInt16) -> [UInt8] {
            TestFrame.udp(sourcePort: port, destination: TestFrame.hostMac, source: TestFrame.guestMac,
                          from: TestFrame.guestIP, to: TestFrame.hostIP)
        }
        driver.transmit(1, header: NetHeader(gsoType: 0x55, gsoSize: 100).bytes(), frame: frame(46001))
        driver.transmit(1, header: NetHeader(flags: NetHeader.needsChecksum, csumStart: 60000, csumOffset: 6).bytes(), frame: frame(46002))
        driver.transmit(1, header: [1, 2, 3, 4, 5], frame: [])
        driver.transmit(1, header: NetHeader(flags: NetHeader.needsChecksum, gsoType: NetHeader.tcpv4, headerLength: 54,
                                             gsoSize: 65535, csumStart: 34, csumOffset: 16).bytes(),
                        frame: TestFrame.tcp(payload: 100, destination: TestFrame.hostMac, source: TestFrame.guestMac,
                                             from: TestFrame.guestIP, to: TestFrame.hostIP))
        driver.transmit(1, header: NetHeader().bytes(), frame: frame(46005))
        await driver.kick(1)
        #expect(driver.queues[1].takeUsed().map { $0.length } == [0, 0, 0, 0, 0])
        let (sent, dropped) = await device.withNet { ($0.txFrames, $0.txDropped) }
        #expect(dropped >= 3 && sent + dropped == 5, "sent \(sent), dropped \(dropped)")
        #expect(host.receive { $0.count > 40 && $0[23] == 17 && $0[34] == 0xB3 && $0[35] == 0xB5 }.count == 1)
        #expect(await device.isActive)
    }

    /// MRG_RXBUF: buffers shorter than a header or read-only are returned unused and counted; a frame
    /// spans the good ones; a frame larger than every buffer the ring can hold is dropped and counted, and
    /// the next frame still arrives.
    @Test func mergeableReceiveSurvivesBadBuffersAndOversizedFrames() async throws {
        let loop = try EventLoop(name: "t-net-mrgbad")
        defer { loop.shutdown() }
        let (peer, device, memory, driver0) = try fakeTapNetDriver(loop: loop)
        defer { close(peer) }
        var driver = driver0
        #expect(await driver.initialize(features: NetFeature.mergeableRxBuffers, queueCount: 2) == 0xF)
        func inject(_ length: Int, _ marker: UInt8) {
            let frame = [UInt8](repeating: 0, count: 12) + [UInt8](repeating: marker, count: length - 12)
            _ = frame.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, 0) }
        }
        inject(3000, 0xA1)
        var q = driver.queues[0]
        q.post([(q.allocate(8), 8, true)])
        q.post([(q.allocate(1024), 1024, false)])
        var good: [UInt16: GuestAddress] = [:]
        for _ in 0..<4 {
            let buffer = q.allocate(1024)
            good[q.post([(buffer, 1024, true)])] = buffer
        }
        driver.queues[0] = q
        await driver.kick(0)
        let used = driver.queues[0].takeUsed()
        #expect(used.map { $0.length } == [0, 0, 1024, 1024, 952])
        let first = try memory.readBytes(at: good[UInt16(used[2].head)]!, count: 12)
        #expect(NetHeader(first).numBuffers == 3)
        #expect(try memory.readBytes(at: good[UInt16(used[4].head)]!, count: 952).allSatisfy { $0 == 0xA1 })
        #expect(await device.withNet { $0.rxBadBuffers } == 2)

        // The ring (16) full of 100-byte buffers cannot take 3000 bytes: dropped once all are held.
        inject(3000, 0xB2)
        var small: [UInt16: GuestAddress] = [:]
        for _ in 0..<15 {
            let buffer = driver.queues[0].allocate(100)
            small[driver.queues[0].post([(buffer, 100, true)])] = buffer
        }
        await driver.kick(0)
        #expect(driver.queues[0].takeUsed().isEmpty)
        #expect(await device.withNet { ($0.rxDropped, $0.pairs[0].pendingLength) } == (1, 0))
        inject(72, 0xC3)
        var next: [(head: UInt32, length: UInt32)] = []
        for _ in 0..<400 where next.isEmpty {
            next = driver.queues[0].takeUsed()
            if next.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(next.map { $0.length } == [72])
        if let entry = next.first, let buffer = small[UInt16(entry.head)] ?? good[UInt16(entry.head)] {
            #expect(try memory.readBytes(at: buffer, count: 72).last == 0xC3)
        }
    }

    /// Control requests: commands not negotiated or unknown get VIRTIO_NET_ERR; a request without a
    /// readable command or a writable ack comes back with length 0; all are counted; the device goes on.
    @Test func badControlRequestsAreRefusedAndCounted() async throws {
        let loop = try EventLoop(name: "t-net-ctrl")
        defer { loop.shutdown() }
        let (peer, device, _, driver0) = try fakeTapNetDriver(loop: loop)
        defer { close(peer) }
        var driver = driver0
        #expect(await driver.initialize(features: NetFeature.ctrlVq, queueCount: 3) == 0xF)
        #expect(await driver.control(2, class: 4, 0, data: [1, 0]) == 1)  // MQ not negotiated
        #expect(await driver.control(2, class: 5, 0, data: [UInt8](repeating: 0, count: 8)) == 1)  // nor CTRL_GUEST_OFFLOADS
        #expect(await driver.control(2, class: 9, 7, data: []) == 1)
        #expect(await driver.control(2, class: 0, 0, data: [1]) == 0)  // promiscuous mode: tolerated
        var q = driver.queues[2]
        q.post([(q.allocate(2, bytes: [4, 0]), 2, false), (q.allocate(2, bytes: [1, 0]), 2, false)])  // no ack byte
        q.post([(q.allocate(1, bytes: [4]), 1, false), (q.allocate(1), 1, true)])  // no command byte
        driver.queues[2] = q
        await driver.kick(2)
        #expect(driver.queues[2].takeUsed().map { $0.length } == [0, 0])
        #expect(await device.withNet { $0.controlErrors } == 5)
        #expect(await device.counters.errors == 5)
        #expect(await device.isActive)
    }
}

/// What the device offers follows the TAP and Cloud Hypervisor's `offload_*` switches; what it sets on
/// the TAP follows what the guest acked.
@Suite struct NetFeatureTests {
    static let all = CKVM_TUN_F_CSUM | CKVM_TUN_F_TSO4 | CKVM_TUN_F_TSO6 | CKVM_TUN_F_TSO_ECN | CKVM_TUN_F_UFO

    @Test func offeredFeaturesFollowTheTapAndTheSwitches() {
        let full = NetFeature.offered(tapOffloads: Self.all, queuePairs: 1)
        #expect(full & NetFeature.guestOffloads == NetFeature.guestOffloads)
        #expect(full & (NetFeature.csum | NetFeature.hostTso4 | NetFeature.hostTso6 | NetFeature.hostEcn | NetFeature.hostUfo
                        | NetFeature.mergeableRxBuffers | NetFeature.ctrlVq | NetFeature.ctrlGuestOffloads) != 0)
        #expect(full & NetFeature.multiQueue == 0)
        #expect(NetFeature.offered(tapOffloads: Self.all, queuePairs: 2) & NetFeature.multiQueue != 0)
        // A TAP that takes no offload: the guest gets none; the host side still takes the guest's.
        let none = NetFeature.offered(tapOffloads: 0, queuePairs: 1)
        #expect(none & NetFeature.guestOffloads == 0 && none & NetFeature.hostTso4 != 0)
        #expect(NetFeature.offered(tapOffloads: Self.all & ~CKVM_TUN_F_UFO, queuePairs: 1) & NetFeature.guestUfo == 0)
        // offload_csum=off: nothing that needs a checksum offload.
        let noCsum = NetFeature.offered(tapOffloads: Self.all, queuePairs: 1, checksum: false)
        #expect(noCsum & (NetFeature.guestOffloads | NetFeature.csum | NetFeature.hostTso4 | NetFeature.hostUfo | NetFeature.ctrlGuestOffloads) == 0)
        let noTso = NetFeature.offered(tapOffloads: Self.all, queuePairs: 1, tso: false)
        #expect(noTso & (NetFeature.guestTso4 | NetFeature.hostTso6 | NetFeature.guestEcn) == 0 && noTso & NetFeature.guestUfo != 0)
        let noUfo = NetFeature.offered(tapOffloads: Self.all, queuePairs: 1, ufo: false)
        #expect(noUfo & (NetFeature.guestUfo | NetFeature.hostUfo) == 0 && noUfo & NetFeature.guestTso4 != 0)
    }

    @Test func tapOffloadsFollowTheAckedGuestOffloads() {
        #expect(NetFeature.tapOffloads(0) == 0)
        #expect(NetFeature.tapOffloads(NetFeature.guestTso4) == 0, "TSO without checksum offload is nothing")
        #expect(NetFeature.tapOffloads(NetFeature.guestCsum) == CKVM_TUN_F_CSUM)
        #expect(NetFeature.tapOffloads(NetFeature.guestOffloads) == Self.all)
        #expect(NetFeature.tapOffloads(NetFeature.guestCsum | NetFeature.guestEcn) == CKVM_TUN_F_CSUM, "ECN only with TSO")
    }

    /// `queue_size`: each queue offers that many entries (and again after a reset); a larger one is refused.
    @Test func queuesOfferTheConfiguredSize() async throws {
        let loop = try EventLoop(name: "t-net-qsize")
        defer { loop.shutdown() }
        var pair: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &pair) == 0)
        defer { close(pair[1]) }
        let options = VirtioNet.Options(tap: "fake", mac: [2, 0, 0, 0, 0, 1], queueSize: 64)
        let backend = VirtioNet(VirtioNet.Opened(tap: TapDevice(adopting: pair[0], name: "fake"), options: options))
        let memory = testMemory()
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await device.configWrite(offset: 0x04, width: 2, value: 0x6)  // memory decoding: BAR0 answers
        for q in 0..<3 {
            await driver.w(VirtioDriver.common + 0x16, 2, UInt64(q))
            #expect(await driver.r(VirtioDriver.common + 0x18, 2) == 64)
        }
        #expect(await driver.initialize(queueSize: 64, queueCount: 2) == 0xF)
        await driver.w(VirtioDriver.common + 0x14, 1, 0)  // reset
        await driver.w(VirtioDriver.common + 0x16, 2, 1)
        #expect(await driver.r(VirtioDriver.common + 0x18, 2) == 64)
        #expect(await driver.initialize(queueSize: 128, queueCount: 2) & 0x40 != 0, "NEEDS_RESET")
    }

    @Test func badQueueOptionsAreRefusedBeforeATapIsOpened() {
        for options in [VirtioNet.Options(tap: "x", mac: [2, 0, 0, 0, 0, 1], queuePairs: 0),
                        VirtioNet.Options(tap: "x", mac: [2, 0, 0, 0, 0, 1], queuePairs: 17),
                        VirtioNet.Options(tap: "x", mac: [2, 0, 0, 0, 0, 1], queueSize: 100),
                        VirtioNet.Options(tap: "x", mac: [2, 0, 0, 0, 0, 1], queueSize: 512)] {
            #expect(throws: VirtioError.self) { _ = try VirtioNet.open(options) }
        }
    }
}
