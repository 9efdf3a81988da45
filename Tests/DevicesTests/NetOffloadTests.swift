import ActorVmm
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// virtio-net over a real TAP with offloads (docs/devices.md, virtio-net): the guest's header reaches the
/// kernel as written, the TAP hands the guest what its acked features allow (whole TSO frames or
/// segments), a large frame spans mergeable buffers, and a batch of frames costs one interrupt.
@Suite(.enabled(if: canCreateTaps, "needs /dev/net/tun and root"), .serialized)
struct NetOffloadTests {
    /// A device on a new TAP, initialised by a test driver acking `features`.
    static func start(_ tag: String, features: UInt64, queueSize: UInt16 = 64, pairs: Int = 1,
                      loop: EventLoop) async throws -> (VirtioDriver, VirtioPciDevice, FakeMsi, String) {
        let name = tapName(tag)
        let backend = try VirtioNet(options: .init(tap: name, mac: TestFrame.guestMac, queuePairs: pairs))
        let memory = testMemory()
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(features: features, queueSize: queueSize, queueCount: 2 * pairs + 1) == 0xF)
        return (driver, device, msi, name)
    }

    @Test func theGuestsHeaderReachesTheKernelAsWritten() async throws {
        let loop = try EventLoop(name: "t-net-txhdr")
        defer { loop.shutdown() }
        var (driver, device, _, name) = try await Self.start("h", features: NetFeature.csum | NetFeature.hostTso4, loop: loop)
        let host = try PacketSocket(interface: name, vnetHeader: true)
        // A 3000-byte TCP segment for the kernel to cut into 1000-byte ones, checksum left to the host,
        // in three pieces after the header.
        let frame = TestFrame.tcp(payload: 3000, destination: TestFrame.hostMac, source: TestFrame.guestMac,
                                  from: TestFrame.guestIP, to: TestFrame.hostIP)
        let header = NetHeader(flags: NetHeader.needsChecksum, gsoType: NetHeader.tcpv4, headerLength: 54, gsoSize: 1000,
                               csumStart: 34, csumOffset: 16)
        driver.transmit(1, header: header.bytes(), frame: frame, pieces: 3)
        await driver.kick(1)
        let seen = host.receive { $0.count > 10 + 40 && Array($0[(10 + 6)..<(10 + 12)]) == TestFrame.guestMac }
        let received = try #require(seen.first, "the frame did not reach the interface")
        let kernel = NetHeader(Array(received[0..<10]))
        #expect(kernel.gsoType == NetHeader.tcpv4 && kernel.gsoSize == 1000, "\(kernel)")
        #expect(kernel.flags & NetHeader.needsChecksum != 0 && kernel.csumStart == 34 && kernel.csumOffset == 16, "\(kernel)")
        #expect(Array(received[10...]) == frame)
        #expect(driver.queues[1].takeUsed().map { $0.length } == [0])
        #expect(await device.withNet { $0.txFrames } == 1)
    }

    /// With GUEST_CSUM and GUEST_TSO4 acked the TAP may hand over a whole 3000-byte segment (TUNSETOFFLOAD
    /// CSUM|TSO4); with nothing acked it has none, so the kernel cuts the segment before the TAP.
    @Test(arguments: [true, false]) func theTapHandsOverWhatTheGuestAcked(tso: Bool) async throws {
        let loop = try EventLoop(name: "t-net-rxoff")
        defer { loop.shutdown() }
        var (driver, device, _, name) = try await Self.start(tso ? "o" : "n", features: tso ? netGuestTso : 0, loop: loop)
        let expected: UInt32 = tso ? CKVM_TUN_F_CSUM | CKVM_TUN_F_TSO4 | CKVM_TUN_F_TSO6 : 0
        let offloads = await device.withNet { $0.tapOffloads }
        #expect(offloads == expected)
        let size = tso ? 65_600 : 1526
        var buffers = driver.postReceive(0, count: tso ? 2 : 8, size: size)
        await driver.kick(0)
        let host = try PacketSocket(interface: name, vnetHeader: true)
        let frame = TestFrame.tcp(payload: 3000, destination: TestFrame.guestMac, source: TestFrame.hostMac,
                                  from: TestFrame.hostIP, to: TestFrame.guestIP)
        let gso = NetHeader(flags: NetHeader.needsChecksum, gsoType: NetHeader.tcpv4, headerLength: 54, gsoSize: 1000,
                            csumStart: 34, csumOffset: 16)
        #expect(host.send(frame, header: gso.bytes(10)) == 10 + frame.count)
        var frames: [(NetHeader, [UInt8])] = []
        for _ in 0..<2000 where frames.count < (tso ? 1 : 3) {  // up to 10 s on a loaded host
            for entry in driver.queues[0].takeUsed() {
                let buffer = buffers[UInt16(entry.head)]!
                let bytes = try driver.memory.readBytes(at: buffer, count: Int(entry.length))
                // Only the test's TCP frames. The kernel sends its own on a new interface (IPv6 on a loaded
                // host may come late): their buffers go back to the ring, or two of them would take both of
                // the TSO case's buffers and leave the test's frame nowhere to go.
                if bytes.count > 12 + 23, bytes[12 + 12] == 0x08, bytes[12 + 23] == 6 {
                    frames.append((NetHeader(bytes), Array(bytes[12...])))
                } else {
                    buffers[driver.queues[0].post([(buffer, UInt32(size), true)])] = buffer
                    await driver.kick(0)
                }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        if tso {
            try #require(frames.count == 1, "\(frames.map { $0.0 })")
            #expect(frames[0].0.gsoType == NetHeader.tcpv4 && frames[0].0.gsoSize == 1000, "\(frames[0].0)")
            #expect(frames[0].0.numBuffers == 1 && frames[0].1.count == frame.count)
            #expect(frames[0].1.suffix(3000) == frame.suffix(3000))
        } else {
            #expect(frames.count == 3, "\(frames.map { $0.0 })")
            for (header, bytes) in frames {
                #expect(header.gsoType == 0 && header.flags == 0 && header.numBuffers == 1, "\(header)")
                #expect(bytes.count == 1054)  // Ethernet, IPv4 and TCP headers, 1000 bytes
            }
        }
    }

    /// MRG_RXBUF: a 3000-byte frame over 1 KiB buffers takes three of them; the first says so
    /// (`num_buffers` 3) and the bytes run on from one buffer to the next.
    @Test func aLargeFrameSpansMergeableBuffers() async throws {
        let loop = try EventLoop(name: "t-net-mrg")
        defer { loop.shutdown() }
        var (driver, device, _, name) = try await Self.start("m", features: netGuestTso | NetFeature.mergeableRxBuffers, loop: loop)
        var buffers: [UInt16: GuestAddress] = [:]
        for _ in 0..<40 { buffers.merge(driver.postReceive(0, count: 1, size: 1024)) { $1 } }
        await driver.kick(0)
        let host = try PacketSocket(interface: name, vnetHeader: true)
        let frame = TestFrame.tcp(payload: 2000, fill: 0xC3, destination: TestFrame.guestMac, source: TestFrame.hostMac,
                                  from: TestFrame.hostIP, to: TestFrame.guestIP)
        let gso = NetHeader(flags: NetHeader.needsChecksum, gsoType: NetHeader.tcpv4, headerLength: 54, gsoSize: 1000,
                            csumStart: 34, csumOffset: 16)
        _ = host.send(frame, header: gso.bytes(10))
        var delivered: [UInt8]?
        var lengths: [UInt32] = []
        var pending: [(head: UInt32, length: UInt32)] = []
        for _ in 0..<400 where delivered == nil {
            pending += driver.queues[0].takeUsed()
            while let first = pending.first {
                let header = NetHeader(try driver.memory.readBytes(at: buffers[UInt16(first.head)]!, count: 12))
                let count = max(Int(header.numBuffers), 1)
                guard pending.count >= count else { break }  // published together: cannot happen
                let entries = pending.prefix(count)
                pending.removeFirst(count)
                var bytes: [UInt8] = []
                for entry in entries { bytes += try driver.memory.readBytes(at: buffers[UInt16(entry.head)]!, count: Int(entry.length)) }
                if bytes.count > 12 + 23, bytes[12 + 23] == 6 {
                    delivered = bytes
                    lengths = entries.map { $0.length }
                }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let bytes = try #require(delivered)
        #expect(lengths == [1024, 1024, UInt32(12 + frame.count - 2048)])
        #expect(NetHeader(bytes).numBuffers == 3)
        #expect(Array(bytes[12...]) == frame)
        #expect(await device.withNet { $0.pairs[0].pendingLength } == 0)
    }

    /// Frames waiting in the TAP when the guest posts buffers are all delivered in one turn with one
    /// interrupt; transmit requests posted together go out in one turn with one interrupt.
    @Test func aBatchOfFramesCostsOneInterrupt() async throws {
        let loop = try EventLoop(name: "t-net-batch")
        defer { loop.shutdown() }
        var (driver, device, msi, name) = try await Self.start("b", features: 0, loop: loop)
        let host = try PacketSocket(interface: name)
        for port in 0..<5 {
            let frame = TestFrame.udp(sourcePort: UInt16(41000 + port), destination: TestFrame.guestMac, source: TestFrame.hostMac,
                                      from: TestFrame.hostIP, to: TestFrame.guestIP)
            #expect(host.send(frame) == frame.count)
        }
        try await Task.sleep(for: .milliseconds(50))  // the loop finds the TAP readable and no buffer
        let before = msi.triggers(1)
        _ = driver.postReceive(0, count: 32, size: 1526)
        await driver.kick(0)
        let used = driver.queues[0].takeUsed()
        #expect(used.count >= 5)
        // One interrupt for the five; frames the kernel sends on its own (IPv6 on a new interface) may
        // arrive later, each a batch of its own.
        #expect(msi.triggers(1) - before <= 1 + (used.count - 5), "\(used.count) frames")
        #expect(msi.triggers(1) - before >= 1)

        let txBefore = msi.triggers(2)
        for port in 0..<5 {
            driver.transmit(1, header: NetHeader().bytes(), frame: TestFrame.udp(
                sourcePort: UInt16(42000 + port), destination: TestFrame.hostMac, source: TestFrame.guestMac,
                from: TestFrame.guestIP, to: TestFrame.hostIP))
        }
        await driver.kick(1)
        #expect(driver.queues[1].takeUsed().count == 5)
        #expect(msi.triggers(2) - txBefore == 1)
        #expect(await device.withNet { $0.txFrames } == 5)
        let seen = host.receive(count: 5) { $0.count > 40 && Array($0[6..<12]) == TestFrame.guestMac && $0[23] == 17 }
        #expect(seen.count == 5)
    }
}
