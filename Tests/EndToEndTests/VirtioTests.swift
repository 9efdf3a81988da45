import Foundation
import Glibc
import Testing

/// The test guest's own virtio drivers (Tests/Guest: PCI enumeration, virtio-pci, split virtqueues, MSI-X)
/// against the real devices, under both event-loop placements. Besides the guest's PASS lines, the host
/// checks the other side of each device: the disk image holds the guest's pattern, the read-only image is
/// untouched, the console file has the guest's text, and a packet socket on the TAP interface saw the
/// guest's frame and fed it the frames it waits for.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"), .serialized)
struct VirtioTests {
    static let mac = "52:54:00:12:34:56"
    static let diskSize = 1 << 20          // disk A: 2048 sectors, written and read back by the guest
    static let readOnlyDiskSize = 64 << 10  // disk B: read-only, must stay as we wrote it

    /// The guest's pattern: the byte at disk offset `o` (Tests/Guest/Sources/TestsVirtio.swift).
    static func pattern(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: (offset >> 9) ^ offset ^ 0xA5) }

    /// Both placements, and both paths of virtio-blk to its images (`ACTOR_VMM_BLOCK_IO`, docs/devices.md).
    @Test(arguments: [("shared", "io_uring"), ("per-device", "sync")])
    func guestDriversPassOnEveryDevice(placement: String, blockIO: String) throws {
        let prefix = NSTemporaryDirectory() + "actor-vmm-\(getpid())-\(placement)"
        let diskA = prefix + "-a.raw", diskB = prefix + "-b.raw", consoleFile = prefix + "-console.txt"
        defer { for path in [diskA, diskB, consoleFile] { unlink(path) } }
        let readOnlyContents = Self.readOnlyContents
        #expect(FileManager.default.createFile(atPath: diskA, contents: Data(count: Self.diskSize)))
        #expect(FileManager.default.createFile(atPath: diskB, contents: readOnlyContents))
        // A TAP name of at most 15 characters, unique to this process and placement.
        let tap = "avm\(getpid() % 100_000)\(placement == "shared" ? "s" : "p")"

        let peer = TapPeer(interface: tap)
        let result = Harness.run(Harness.vmmPath, [
            "--kernel", Harness.guestPath, "--cmdline", "tests=pci,blk,rng,console,net",
            "--memory", "size=64M", "--serial", "tty", "--event-loops", placement,
            "--disk", "path=\(diskA)", "--disk", "path=\(diskB),readonly=on", "--rng",
            "--console", "file=\(consoleFile)",
            "--net", "tap=\(tap),mac=\(Self.mac),ip=192.168.249.1,mask=255.255.255.0",
        ], timeout: 180, environment: ["ACTOR_VMM_BLOCK_IO": blockIO]) { _ in peer.start() }
        peer.stop()

        let context = "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)"
        #expect(result.status == 0, "\(context)")
        #expect(!result.timedOut, "\(context)")
        try Self.expectEveryDevicePassed(lines: result.lines, diskA: diskA, diskB: diskB, console: consoleFile,
                                         readOnlyContents: readOnlyContents, context: context)
        #expect(peer.sawGuestFrame, "no ACTORVMM-NET-TX frame on \(tap); injected \(peer.injected) frames")
        #expect(peer.injected > 0)
    }

    /// The guest's PASS lines for `tests=pci,blk,rng,console,net`, and the host's side of the disks and the
    /// console: disk A holds the guest's pattern, disk B is `readOnlyContents`, the console file has its text.
    static func expectEveryDevicePassed(lines: [String], diskA: String, diskB: String, console consoleFile: String,
                                        readOnlyContents: Data, context: String,
                                        sourceLocation: SourceLocation = #_sourceLocation) throws {
        func expectLine(_ prefix: String) {
            #expect(lines.contains { $0.hasPrefix(prefix) }, "no '\(prefix)': \(context)", sourceLocation: sourceLocation)
        }
        expectLine("TESTGUEST DONE pass=5 fail=0")
        expectLine("TEST pci PASS functions=6 virtio=5 (blk=2 net=1 rng=1 console=1) ecam=ok")
        expectLine("TEST blk PASS disks=2 rw_sectors=2048 ro=1 flush=ok oob=ioerr indirect=ok")
        expectLine("TEST rng PASS len=64,64 distinct=yes")
        expectLine("TEST console PASS")
        expectLine("TEST net PASS mac=\(mac) tx=ok rx=ok")
        // The other side of each device.
        let a = [UInt8](try Data(contentsOf: URL(fileURLWithPath: diskA)))
        #expect(a.count == diskSize, sourceLocation: sourceLocation)
        let firstWrong = a.indices.first { a[$0] != pattern($0) }
        #expect(firstWrong == nil, "disk A differs from the guest's pattern at offset \(firstWrong ?? -1)",
                sourceLocation: sourceLocation)
        #expect(try Data(contentsOf: URL(fileURLWithPath: diskB)) == readOnlyContents, "the read-only disk changed",
                sourceLocation: sourceLocation)
        let console = (try? String(contentsOfFile: consoleFile, encoding: .utf8)) ?? ""
        #expect(console.contains("hello from hvc0"), "console file: \(console.debugDescription)", sourceLocation: sourceLocation)
    }

    /// Disk B's contents: byte i is i * 131 + 7 (Tests/Nested/checks.sh writes the same).
    static let readOnlyContents = Data((0..<readOnlyDiskSize).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) })
}

/// The seeds' `--net "tap=,mac=,ip=,mask="` (Cloud Hypervisor's README) with the test guest's `net` check:
/// the VMM creates `vmtapN` with 192.168.249.1/24 and brings it up, the guest's driver finds a random
/// locally administered MAC and exchanges frames with a peer on that TAP (the frame's source MAC is the one
/// the guest read), and the TAP is gone once the VMM has exited.
extension VirtioTests {
    /// The test guest's `net` check (any locally administered MAC) with `--net NET` naming no TAP, `extra`
    /// options after it, and a peer on the first TAP the VMM's descriptors show once it has created one.
    static func netCheckOnACreatedTap(net: String, _ extra: [String] = []) -> (result: Harness.Result, peer: TapPeer) {
        let owner = VmmPid()
        let peer = TapPeer { owner.pid.flatMap { TapPeer.taps(ownedBy: $0).first } }
        let result = Harness.run(Harness.vmmPath, [
            "--kernel", Harness.guestPath, "--cmdline", "tests=net netmac=any",
            "--memory", "size=64M", "--serial", "tty", "--console", "off", "-v", "--net", net,
        ] + extra, timeout: 180) { pid in
            owner.pid = pid
            peer.start()
        }
        peer.stop()
        return (result, peer)
    }

    @Test func aTapTheVmmCreatesCarriesFramesAndIsGoneAfterExit() throws {
        let (result, peer) = Self.netCheckOnACreatedTap(net: "tap=,mac=,ip=,mask=")

        let context = "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)"
        #expect(result.status == 0 && !result.timedOut, "\(context)")
        #expect(result.lines.contains("TESTGUEST DONE pass=1 fail=0"), "\(context)")
        let line = result.lines.first { $0.hasPrefix("TEST net PASS mac=") } ?? ""
        #expect(line.contains(" tx=ok rx=ok"), "\(context)")
        let interface = try #require(peer.interface, "no TAP found in the VMM's descriptors: \(context)")
        #expect(interface.hasPrefix("vmtap") && Int(interface.dropFirst(5)) != nil, "\(interface)")
        #expect(result.stderr.contains("TAP \(interface) (created, 192.168.249.1/255.255.255.0, up)"), "\(context)")
        let shown = peer.addressWhileRunning ?? ""
        #expect(shown.contains("inet 192.168.249.1/24"), "while the VM ran: \(shown)")
        #expect(peer.sawGuestFrame, "no ACTORVMM-NET-TX frame on \(interface); injected \(peer.injected) frames")
        let guestMac = try #require(peer.guestMac)
        #expect(line.hasPrefix("TEST net PASS mac=\(guestMac) "), "the frame's source is the MAC the guest read: \(guestMac), \(line)")
        #expect(if_nametoindex(interface) == 0, "\(interface) is still there after the VMM exited")
    }
}

/// The VMM's process id, set once it has started, read by the peer's thread.
final class VmmPid: @unchecked Sendable {  // every access holds `lock`
    private let lock = NSLock()
    private var value: Int32?
    var pid: Int32? {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

/// The host end of the guest's network: an `AF_PACKET` socket bound to the TAP interface (ethertype 0x88B5
/// only). From `start()` until `stop()` a thread waits for the interface to appear, then every 50 ms sends
/// `ff:ff:ff:ff:ff:ff ← 02:00:00:00:00:01, 0x88B5, "ACTORVMM-NET-RX"` (which reaches the guest through
/// the TAP) and reads frames, looking for the guest's `ACTORVMM-NET-TX`. Needs root (CAP_NET_RAW).
final class TapPeer: @unchecked Sendable {
    static let etherType: UInt16 = 0x88B5

    /// The interface's name, asked again until it is known (a TAP the VMM names itself appears late).
    private let resolve: () -> String?
    private let lock = NSLock()
    private let finished = DispatchSemaphore(value: 0)
    private var stopping = false
    private var _sawGuestFrame = false
    private var _injected = 0
    private var _interface: String?
    private var _addressWhileRunning: String?
    private var _guestMac: [UInt8]?

    init(interface: String) { resolve = { interface } }
    /// For a TAP whose name is not known in advance; `resolve` is called on the peer's thread.
    init(resolve: @escaping () -> String?) { self.resolve = resolve }

    var sawGuestFrame: Bool { lock.withLock { _sawGuestFrame } }
    var injected: Int { lock.withLock { _injected } }
    /// The interface the peer found.
    var interface: String? { lock.withLock { _interface } }
    /// `ip -o -4 addr show` of the interface once a frame went through it (while the VMM ran).
    var addressWhileRunning: String? { lock.withLock { _addressWhileRunning } }
    /// The source MAC of the guest's frame, "52:54:00:12:34:56".
    var guestMac: String? { lock.withLock { _guestMac }.map { $0.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":") } }

    /// The TAP interfaces process `pid` has open (`iff:` in its descriptors' fdinfo), sorted.
    static func taps(ownedBy pid: Int32) -> [String] {
        let directory = "/proc/\(pid)/fdinfo"
        var names: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let info = try? String(contentsOfFile: directory + "/" + entry, encoding: .utf8) else { continue }
            if let line = info.split(separator: "\n").first(where: { $0.hasPrefix("iff:") }) {
                names.append(line.dropFirst(4).trimmingCharacters(in: .whitespaces))
            }
        }
        return names.sorted()
    }

    func start() {
        Thread.detachNewThread { [self] in
            run()
            finished.signal()
        }
    }

    func stop() {
        lock.withLock { stopping = true }
        finished.wait()
    }

    /// The frame the guest waits for: broadcast, from a locally administered MAC, padded to 60 bytes.
    static let injectedFrame: [UInt8] = {
        var frame = [UInt8](repeating: 0xFF, count: 6) + [0x02, 0, 0, 0, 0, 0x01]
        frame += [UInt8(etherType >> 8), UInt8(etherType & 0xFF)]
        frame += Array("ACTORVMM-NET-RX".utf8)
        return frame + [UInt8](repeating: 0, count: 60 - frame.count)
    }()

    private func run() {
        var fd: Int32 = -1
        defer { if fd >= 0 { close(fd) } }
        var buffer = [UInt8](repeating: 0, count: 2048)
        while !lock.withLock({ stopping }) {
            if fd < 0 {
                fd = openSocket()
                if fd < 0 { usleep(20_000); continue }
            }
            // Until the VMM has brought the interface up this fails (ENETDOWN); just try again.
            if Self.injectedFrame.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) > 0 {
                let first = lock.withLock { _injected += 1; return _injected == 1 }
                if first, let name = interface {
                    let shown = Harness.run("/usr/sbin/ip", ["-o", "-4", "addr", "show", "dev", name], timeout: 10).stdout
                    lock.withLock { _addressWhileRunning = shown }
                }
            }
            // Then read for 50 ms (SO_RCVTIMEO bounds each recv).
            let deadline = Date().addingTimeInterval(0.05)
            while Date() < deadline {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0 {
                    if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ENETDOWN { break }
                    close(fd)  // the interface went away: the VMM exited
                    fd = -1
                    break
                }
                let payload = Array("ACTORVMM-NET-TX".utf8)
                if count >= 14 + payload.count, buffer[12] == UInt8(Self.etherType >> 8),
                   buffer[13] == UInt8(Self.etherType & 0xFF), Array(buffer[14..<(14 + payload.count)]) == payload {
                    lock.withLock { _sawGuestFrame = true; _guestMac = Array(buffer[6..<12]) }
                }
            }
        }
    }

    /// `socket(AF_PACKET, SOCK_RAW, htons(0x88B5))` bound to the interface, or -1 while it does not exist.
    private func openSocket() -> Int32 {
        guard let interface = lock.withLock({ _interface }) ?? resolve() else { return -1 }
        let index = if_nametoindex(interface)
        guard index != 0 else { return -1 }
        lock.withLock { _interface = interface }
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), Int32(Self.etherType.bigEndian))
        guard fd >= 0 else { return -1 }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // struct sockaddr_ll (<netpacket/packet.h>, not in the Glibc module), 20 bytes: sll_family (u16),
        // sll_protocol (u16, network order), sll_ifindex (i32), then hatype, pkttype, halen, addr: unused.
        var address = [UInt8](repeating: 0, count: 20)
        let family = UInt16(AF_PACKET)
        address[0] = UInt8(family & 0xFF)
        address[1] = UInt8(family >> 8)
        address[2] = UInt8(Self.etherType >> 8)
        address[3] = UInt8(Self.etherType & 0xFF)
        withUnsafeBytes(of: Int32(index).littleEndian) { for i in 0..<4 { address[4 + i] = $0[i] } }
        let bound = address.withUnsafeBytes {
            bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
        }
        guard bound == 0 else {
            close(fd)
            return -1
        }
        return fd
    }
}
