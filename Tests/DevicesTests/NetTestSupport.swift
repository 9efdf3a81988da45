import ActorVmm
import CKvm
@testable import Devices
import Glibc
import Testing

/// True where real TAP tests can run (they create interfaces: root and /dev/net/tun).
let canCreateTaps = access("/dev/net/tun", R_OK | W_OK) == 0 && getuid() == 0

/// A fresh interface name per test and process ("avm" + tag + pid, at most 15 bytes).
func tapName(_ tag: String) -> String { "avm\(tag)\(getpid() % 100_000)" }

/// The host side of a TAP for tests: an `AF_PACKET` socket bound to the interface (all ethertypes). With
/// `vnetHeader`, every frame sent or received carries a 10-byte `virtio_net_hdr` in front (PACKET_VNET_HDR),
/// which shows the checksum and GSO state the kernel keeps for it.
final class PacketSocket {
    let fd: Int32
    let vnetHeader: Bool

    init(interface: String, vnetHeader: Bool = false) throws {
        let index = if_nametoindex(interface)
        try #require(index != 0, "no interface \(interface)")
        fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), Int32(UInt16(0x0003).bigEndian))  // ETH_P_ALL
        try #require(fd >= 0)
        self.vnetHeader = vnetHeader
        var one: Int32 = 1
        if vnetHeader {
            try #require(setsockopt(fd, 263, 15, &one, 4) == 0)  // SOL_PACKET, PACKET_VNET_HDR
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 20_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_protocol = UInt16(0x0003).bigEndian
        address.sll_ifindex = Int32(index)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size)) }
        }
        try #require(bound == 0)
    }

    deinit { close(fd) }

    /// Sends one frame (behind `header` with PACKET_VNET_HDR) out of the interface: the TAP reads it.
    func send(_ frame: [UInt8], header: [UInt8] = [UInt8](repeating: 0, count: 10)) -> Int {
        let bytes = vnetHeader ? header + frame : frame
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Frames the interface received (what the guest sent) until `deadline` seconds pass with none
    /// matching `match`; returns the matching ones (with their 10-byte header under PACKET_VNET_HDR).
    func receive(seconds: Double = 2, count: Int = 1, _ match: ([UInt8]) -> Bool) -> [[UInt8]] {
        var found: [[UInt8]] = []
        let end = Double(clockMicros()) / 1e6 + seconds
        var buffer = [UInt8](repeating: 0, count: 70_000)
        while found.count < count && Double(clockMicros()) / 1e6 < end {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { continue }
            let frame = Array(buffer[0..<n])
            if match(frame) { found.append(frame) }
        }
        return found
    }
}

private func clockMicros() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
}

/// Test frames: Ethernet + IPv4 + TCP or UDP, with a correct IPv4 header checksum.
enum TestFrame {
    static let guestMac: [UInt8] = [0x52, 0x54, 0, 0x12, 0x34, 0x56]
    static let hostMac: [UInt8] = [0x02, 0, 0, 0, 0, 0x99]
    static let guestIP: [UInt8] = [10, 99, 0, 2], hostIP: [UInt8] = [10, 99, 0, 1]

    /// A TCP/IPv4 frame with `payload` bytes of `fill`, `destination` ← `source` MAC.
    static func tcp(payload: Int, fill: UInt8 = 0x5A, destination: [UInt8], source: [UInt8],
                    from: [UInt8], to: [UInt8], sourcePort: UInt16 = 40000) -> [UInt8] {
        var tcp = [UInt8](repeating: 0, count: 20)
        put16(&tcp, 0, sourcePort); put16(&tcp, 2, 5001)
        put32(&tcp, 4, 1000); put32(&tcp, 8, 1)
        tcp[12] = 5 << 4; tcp[13] = 0x18  // data offset 5 words; PSH | ACK
        put16(&tcp, 14, 65535)
        // The pseudo-header sum, as a stack leaves it for a partial checksum.
        let length = 20 + payload
        var pseudo = UInt32(from[0]) << 8 + UInt32(from[1]) + UInt32(from[2]) << 8 + UInt32(from[3])
        pseudo += UInt32(to[0]) << 8 + UInt32(to[1]) + UInt32(to[2]) << 8 + UInt32(to[3]) + 6 + UInt32(length)
        while pseudo > 0xFFFF { pseudo = (pseudo & 0xFFFF) + (pseudo >> 16) }
        put16(&tcp, 16, UInt16(pseudo))
        return ethernet(destination, source) + ipv4(protocol: 6, length: length, from: from, to: to) + tcp
            + [UInt8](repeating: fill, count: payload)
    }

    /// A UDP/IPv4 frame from `sourcePort` (different ports: different flows) with an 18-byte payload.
    static func udp(sourcePort: UInt16, destination: [UInt8], source: [UInt8], from: [UInt8], to: [UInt8]) -> [UInt8] {
        var udp = [UInt8](repeating: 0, count: 8)
        put16(&udp, 0, sourcePort); put16(&udp, 2, 5001); put16(&udp, 4, 8 + 18)
        return ethernet(destination, source) + ipv4(protocol: 17, length: 26, from: from, to: to) + udp
            + Array("ACTORVMM-MQ-FLOW..".utf8)
    }

    static func ethernet(_ destination: [UInt8], _ source: [UInt8]) -> [UInt8] { destination + source + [0x08, 0x00] }

    static func ipv4(protocol number: UInt8, length: Int, from: [UInt8], to: [UInt8]) -> [UInt8] {
        var ip: [UInt8] = [0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, number, 0, 0] + from + to
        put16(&ip, 2, UInt16(20 + length))
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        put16(&ip, 10, ~UInt16(sum))
        return ip
    }

    static func put16(_ bytes: inout [UInt8], _ at: Int, _ value: UInt16) {
        bytes[at] = UInt8(value >> 8); bytes[at + 1] = UInt8(value & 0xFF)
    }

    static func put32(_ bytes: inout [UInt8], _ at: Int, _ value: UInt32) {
        put16(&bytes, at, UInt16(value >> 16)); put16(&bytes, at + 2, UInt16(value & 0xFFFF))
    }
}

/// A `virtio_net_hdr` (12 bytes with `num_buffers`, or the 10-byte one of PACKET_VNET_HDR).
struct NetHeader: Equatable, CustomStringConvertible {
    var flags: UInt8 = 0, gsoType: UInt8 = 0
    var headerLength: UInt16 = 0, gsoSize: UInt16 = 0, csumStart: UInt16 = 0, csumOffset: UInt16 = 0
    var numBuffers: UInt16 = 0

    static let needsChecksum: UInt8 = 1, tcpv4: UInt8 = 1

    init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
         csumStart: UInt16 = 0, csumOffset: UInt16 = 0) {
        self.flags = flags; self.gsoType = gsoType; self.headerLength = headerLength; self.gsoSize = gsoSize
        self.csumStart = csumStart; self.csumOffset = csumOffset
    }

    init(_ bytes: [UInt8]) {
        func le(_ at: Int) -> UInt16 { at + 1 < bytes.count ? UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 : 0 }
        flags = bytes[0]; gsoType = bytes[1]
        headerLength = le(2); gsoSize = le(4); csumStart = le(6); csumOffset = le(8); numBuffers = le(10)
    }

    /// The header's bytes: 10, or 12 with `num_buffers`.
    func bytes(_ size: Int = 12) -> [UInt8] {
        var bytes = [flags, gsoType]
        for value in [headerLength, gsoSize, csumStart, csumOffset, numBuffers] {
            bytes += [UInt8(value & 0xFF), UInt8(value >> 8)]
        }
        return Array(bytes.prefix(size))
    }

    var description: String {
        "flags \(flags) gso \(gsoType)/\(gsoSize) hdr \(headerLength) csum \(csumStart)+\(csumOffset) buffers \(numBuffers)"
    }
}

extension VirtioDriver {
    /// Posts `count` receive buffers of `size` bytes on queue `q`; returns their addresses by head.
    mutating func postReceive(_ q: Int, count: Int, size: Int) -> [UInt16: GuestAddress] {
        var buffers: [UInt16: GuestAddress] = [:]
        for _ in 0..<count {
            let buffer = queues[q].allocate(size)
            buffers[queues[q].post([(buffer, UInt32(size), true)])] = buffer
        }
        return buffers
    }

    /// Used entries of queue `q`, waiting up to two seconds for at least `count`.
    mutating func waitUsed(_ q: Int, count: Int = 1) async throws -> [(head: UInt32, length: UInt32)] {
        var used: [(head: UInt32, length: UInt32)] = []
        for _ in 0..<400 where used.count < count {
            used += queues[q].takeUsed()
            if used.count < count { try await Task.sleep(for: .milliseconds(5)) }
        }
        return used
    }

    /// Sends a control command on queue `q` and returns the device's ack (nil: the request came back
    /// without one).
    mutating func control(_ q: Int, class kind: UInt8, _ command: UInt8, data: [UInt8]) async -> UInt8? {
        let header = queues[q].allocate(2, bytes: [kind, command])
        let body = queues[q].allocate(max(data.count, 1), bytes: data)
        let ack = queues[q].allocate(1, bytes: [0xEE])
        queues[q].post([(header, 2, false), (body, UInt32(data.count), false), (ack, 1, true)])
        await kick(q)
        let used = queues[q].takeUsed()
        guard used.count == 1, used[0].length == 1 else { return nil }
        return try? memory.read(at: ack)
    }

    /// Posts one transmit request: `header` then `frame` split into `pieces` buffers.
    mutating func transmit(_ q: Int, header: [UInt8], frame: [UInt8], pieces: Int = 1) {
        var buffers: [(GuestAddress, UInt32, writable: Bool)] = [(queues[q].allocate(header.count, bytes: header), UInt32(header.count), false)]
        let step = max((frame.count + pieces - 1) / pieces, 1)
        for start in stride(from: 0, to: frame.count, by: step) {
            let part = Array(frame[start..<min(start + step, frame.count)])
            buffers.append((queues[q].allocate(part.count, bytes: part), UInt32(part.count), false))
        }
        queues[q].post(buffers)
    }
}

extension VirtioPciDevice {
    /// Runs `body` on the net backend inside the actor (counters, state).
    func withNet<R: Sendable>(_ body: (VirtioNet) -> R) -> R { body(backend as! VirtioNet) }
}

/// Net features a test driver acks (bits of NetFeature), and VIRTIO_F_VERSION_1 is added by `initialize`.
let netGuestTso: UInt64 = NetFeature.guestCsum | NetFeature.guestTso4 | NetFeature.guestTso6
