import ActorVmm
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Testing

/// Several queue pairs over a multi-queue TAP, and the control queue that switches them and the guest
/// offloads (docs/devices.md, virtio-net).
@Suite(.enabled(if: canCreateTaps, "needs /dev/net/tun and root"), .serialized)
struct NetQueuePairTests {
    /// Two pairs: until VQ_PAIRS_SET only pair 0 receives (the second TAP queue is detached); after
    /// VQ_PAIRS_SET 2 the kernel spreads flows over both; pair 1 transmits through its own TAP queue; a
    /// count outside 1…2 is refused.
    @Test func queuePairsServeTheirOwnTapQueues() async throws {
        let loop = try EventLoop(name: "t-net-mq")
        defer { loop.shutdown() }
        var (driver, device, _, name) = try await NetOffloadTests.start(
            "q", features: NetFeature.multiQueue | NetFeature.ctrlVq, pairs: 2, loop: loop)
        #expect(await device.withNet { ($0.queueCount, $0.activePairs, $0.pairs[1].attached) } == (5, 1, false))
        var buffers: [Int: [UInt16: GuestAddress]] = [:]
        for q in [0, 2] {
            buffers[q] = driver.postReceive(q, count: 64, size: 1526)
            await driver.kick(q)
        }
        let host = try PacketSocket(interface: name)
        func inject(_ ports: Range<Int>) {
            for port in ports {
                _ = host.send(TestFrame.udp(sourcePort: UInt16(port), destination: TestFrame.guestMac, source: TestFrame.hostMac,
                                            from: TestFrame.hostIP, to: TestFrame.guestIP))
            }
        }
        /// Test frames (UDP to port 5001) that arrived on rx queues 0 and 2, waiting for `total`.
        func arrivals(_ total: Int) async throws -> [Int: Int] {
            var counts: [Int: Int] = [0: 0, 2: 0]
            for _ in 0..<400 where counts.values.reduce(0, +) < total {
                for q in [0, 2] {
                    for entry in driver.queues[q].takeUsed() {
                        let bytes = try driver.memory.readBytes(at: buffers[q]![UInt16(entry.head)]!, count: Int(entry.length))
                        if bytes.count > 12 + 37, bytes[12 + 23] == 17, bytes[12 + 36] == 0x13, bytes[12 + 37] == 0x89 { counts[q]! += 1 }
                    }
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            return counts
        }
        inject(43000..<43016)
        #expect(try await arrivals(16) == [0: 16, 2: 0])

        #expect(await driver.control(4, class: 4, 0, data: [2, 0]) == 0)  // VQ_PAIRS_SET 2
        #expect(await device.withNet { ($0.activePairs, $0.pairs[1].attached) } == (2, true))
        inject(44000..<44032)
        let spread = try await arrivals(32)
        #expect(spread[0]! + spread[2]! == 32 && spread[0]! > 0 && spread[2]! > 0, "\(spread)")

        driver.transmit(3, header: NetHeader().bytes(), frame: TestFrame.udp(
            sourcePort: 45000, destination: TestFrame.hostMac, source: TestFrame.guestMac, from: TestFrame.guestIP, to: TestFrame.hostIP))
        await driver.kick(3)
        #expect(host.receive { $0.count > 40 && Array($0[6..<12]) == TestFrame.guestMac && $0[34] == 0xAF && $0[35] == 0xC8 }.count == 1)
        #expect(driver.queues[3].takeUsed().count == 1)

        #expect(await driver.control(4, class: 4, 0, data: [3, 0]) == 1)  // more pairs than the device has
        #expect(await driver.control(4, class: 4, 0, data: [0, 0]) == 1)
        #expect(await driver.control(4, class: 4, 0, data: [1, 0]) == 0)
        #expect(await device.withNet { ($0.activePairs, $0.pairs[1].attached, $0.controlErrors) } == (1, false, 2))
    }

    /// GUEST_OFFLOADS_SET switches the TAP's offloads within what was acked; more is refused.
    @Test func guestOffloadsCanBeSwitchedWithinWhatWasAcked() async throws {
        let loop = try EventLoop(name: "t-net-goff")
        defer { loop.shutdown() }
        var (driver, device, _, _) = try await NetOffloadTests.start(
            "k", features: NetFeature.ctrlVq | NetFeature.ctrlGuestOffloads | NetFeature.guestCsum | NetFeature.guestTso4, loop: loop)
        #expect(await device.withNet { $0.tapOffloads } == CKVM_TUN_F_CSUM | CKVM_TUN_F_TSO4)
        let csumOnly = withUnsafeBytes(of: NetFeature.guestCsum.littleEndian) { Array($0) }
        #expect(await driver.control(2, class: 5, 0, data: csumOnly) == 0)
        #expect(await device.withNet { $0.tapOffloads } == CKVM_TUN_F_CSUM)
        let notAcked = withUnsafeBytes(of: (NetFeature.guestCsum | NetFeature.guestTso6).littleEndian) { Array($0) }
        #expect(await driver.control(2, class: 5, 0, data: notAcked) == 1)
        #expect(await device.withNet { $0.tapOffloads } == CKVM_TUN_F_CSUM)
        #expect(await driver.control(2, class: 5, 0, data: [0, 0, 0, 0, 0, 0, 0, 0]) == 0)
        #expect(await device.withNet { $0.tapOffloads } == 0)
        // A reset leaves the TAP without offloads until the next driver acks some.
        await driver.initialize(features: NetFeature.guestCsum, queueCount: 3)
        #expect(await device.withNet { $0.tapOffloads } == CKVM_TUN_F_CSUM)
        await driver.w(VirtioDriver.common + 0x14, 1, 0)
        #expect(await device.withNet { $0.tapOffloads } == 0)
    }
}
