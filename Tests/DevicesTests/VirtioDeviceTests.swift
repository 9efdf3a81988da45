import ActorVmm
import CKvm
@testable import Devices
import EpollLoop
import Glibc
import Synchronization
import Testing

/// Block requests the way Linux's virtio_blk builds them: header, data, status byte.
extension VirtioDriver {
    mutating func blockRequest(type: UInt32, sector: UInt64, data: [UInt8]? = nil, readLength: Int = 0,
                               extraReadable: [UInt8] = [], queue: Int = 0) async -> (status: UInt8, used: UInt32, data: [UInt8]) {
        var header: [UInt8] = []
        appendLE(&header, type)
        appendLE(&header, UInt32(0))
        appendLE(&header, sector)
        var q = queues[queue]
        var buffers: [(GuestAddress, UInt32, writable: Bool)] = [(q.allocate(16, bytes: header), 16, false)]
        if let data { buffers.append((q.allocate(data.count, bytes: data), UInt32(data.count), false)) }
        if !extraReadable.isEmpty { buffers.append((q.allocate(extraReadable.count, bytes: extraReadable), UInt32(extraReadable.count), false)) }
        var readAddress: GuestAddress?
        if readLength > 0 {
            let address = q.allocate(readLength)
            readAddress = address
            buffers.append((address, UInt32(readLength), true))
        }
        let status = q.allocate(1, bytes: [0xEE])
        buffers.append((status, 1, true))
        q.post(buffers)
        queues[queue] = q
        await kick(queue)
        let used = await awaitUsed(queue: queue)
        let bytes = readAddress.map { try! memory.readBytes(at: $0, count: readLength) } ?? []
        return (try! memory.read(at: status), used.first?.length ?? 0, bytes)
    }
}

@Suite struct BlockDeviceTests {
    func pattern(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7) ^ seed } }

    @Test func readWriteFlushGetIDAndErrors() async throws {
        let loop = try EventLoop(name: "t-blk")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024)
        let memory = testMemory()
        let backend = try VirtioBlock(options: .init(path: file.path, id: "disk-under-test"))
        #expect(backend.capacitySectors == 128)
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 1) == 0xF)
        #expect(await driver.r(0x2000, 8) == 128)   // capacity
        #expect(await driver.r(0x2014, 4) == 512)   // blk_size

        let data = pattern(4096, seed: 0x5A)
        var result = await driver.blockRequest(type: 1, sector: 8, data: data)
        #expect(result.status == 0 && result.used == 1)
        #expect(Array(file.contents()[4096..<8192]) == data)

        result = await driver.blockRequest(type: 0, sector: 8, readLength: 4096)
        #expect(result.status == 0 && result.used == 4097)
        #expect(result.data == data)

        #expect(await driver.blockRequest(type: 4, sector: 0).status == 0)  // FLUSH
        result = await driver.blockRequest(type: 8, sector: 0, readLength: 20)
        #expect(result.status == 0)
        #expect(Array(result.data.prefix(15)) == Array("disk-under-test".utf8))

        // Past the end: IOERR, nothing read or written.
        #expect(await driver.blockRequest(type: 0, sector: 128, readLength: 512).status == 1)
        #expect(await driver.blockRequest(type: 1, sector: 127, data: pattern(1024, seed: 1)).status == 1)
        #expect(await driver.blockRequest(type: 0, sector: UInt64.max, readLength: 512).status == 1)
        // Unknown type: UNSUPP.
        #expect(await driver.blockRequest(type: 99, sector: 0).status == 2)
        // A data length that is not whole sectors: IOERR.
        #expect(await driver.blockRequest(type: 1, sector: 0, data: [1, 2, 3]).status == 1)
        #expect(await device.counters.errors >= 4)
    }

    @Test func discardAndWriteZeroes() async throws {
        let loop = try EventLoop(name: "t-blk-dz")
        defer { loop.shutdown() }
        let file = TempFile(size: 64 * 1024, fill: 0xAB)
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioBlock(options: .init(path: file.path)), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        var segment: [UInt8] = []
        appendLE(&segment, UInt64(2)); appendLE(&segment, UInt32(4)); appendLE(&segment, UInt32(0))
        #expect(await driver.blockRequest(type: 13, sector: 0, extraReadable: segment).status == 0)
        let contents = file.contents()
        #expect(contents[1024..<3072].allSatisfy { $0 == 0 })
        #expect(contents[0..<1024].allSatisfy { $0 == 0xAB } && contents[3072...].allSatisfy { $0 == 0xAB })
        var discard: [UInt8] = []
        appendLE(&discard, UInt64(100)); appendLE(&discard, UInt32(28)); appendLE(&discard, UInt32(0))
        #expect(await driver.blockRequest(type: 11, sector: 0, extraReadable: discard).status == 0)
        var outside: [UInt8] = []
        appendLE(&outside, UInt64(120)); appendLE(&outside, UInt32(16)); appendLE(&outside, UInt32(0))
        #expect(await driver.blockRequest(type: 11, sector: 0, extraReadable: outside).status == 1)
    }

    @Test func readonlyDiskRefusesWritesAndOffersRO() async throws {
        let loop = try EventLoop(name: "t-blk-ro")
        defer { loop.shutdown() }
        let file = TempFile(size: 8192, fill: 0x11)
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioBlock(options: .init(path: file.path, readonly: true)), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.w(0x00, 4, 0)
        await device.configWrite(offset: 0x04, width: 2, value: 0x6)
        #expect(await driver.r(0x04, 4) & (1 << 5) != 0)  // VIRTIO_BLK_F_RO
        await driver.initialize(queueCount: 1)
        #expect(await driver.blockRequest(type: 1, sector: 0, data: [UInt8](repeating: 0xFF, count: 512)).status == 1)
        #expect(await driver.blockRequest(type: 0, sector: 0, readLength: 512).data == [UInt8](repeating: 0x11, count: 512))
        #expect(file.contents().allSatisfy { $0 == 0x11 })
    }

    @Test func missingImageIsAClearError() {
        #expect(throws: VirtioError("cannot open: No such file or directory")) {
            try VirtioBlock(options: .init(path: "/nonexistent.raw"))
        }
    }
}

/// Captures console output.
final class CaptureOutput: SerialOutput {
    let bytes = Mutex<[UInt8]>([])
    func write(_ buffer: UnsafeRawBufferPointer) { bytes.withLock { $0 += buffer } }
}

@Suite struct ConsoleDeviceTests {
    @Test func transmitGoesToTheOutputAndInputReachesTheGuest() async throws {
        let loop = try EventLoop(name: "t-con")
        defer { loop.shutdown() }
        var pipeFDs: [Int32] = [0, 0]
        pipe(&pipeFDs)
        _ = fcntl(pipeFDs[0], F_SETFL, O_NONBLOCK)
        defer { close(pipeFDs[0]); close(pipeFDs[1]) }
        let memory = testMemory()
        let output = CaptureOutput()
        let (device, msi) = try makeDevice(VirtioConsole(output: output, inputFD: pipeFDs[0]), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(queueCount: 2) == 0xF)
        let text = Array("hello from hvc0\n".utf8)
        driver.queues[1].post([(driver.queues[1].allocate(text.count, bytes: text), UInt32(text.count), false)])
        await driver.kick(1)
        #expect(output.bytes.withLock { $0 } == text)

        // Host input waits until the guest posts a receive buffer, then arrives.
        _ = Array("typed".utf8).withUnsafeBytes { write(pipeFDs[1], $0.baseAddress, 5) }
        let buffer = driver.queues[0].allocate(64)
        driver.queues[0].post([(buffer, 64, true)])
        await driver.kick(0)
        var used: [(head: UInt32, length: UInt32)] = []
        for _ in 0..<200 where used.isEmpty {
            used = driver.queues[0].takeUsed()
            if used.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(used.map { $0.length } == [5])
        #expect(try memory.readBytes(at: buffer, count: 5) == Array("typed".utf8))
        #expect(msi.triggers(1) >= 1)
    }
}

@Suite(.enabled(if: access("/dev/net/tun", R_OK | W_OK) == 0 && getuid() == 0, "needs /dev/net/tun and root"))
struct NetDeviceTests {
    @Test func framesFlowBothWaysThroughTheTap() async throws {
        let loop = try EventLoop(name: "t-net")
        defer { loop.shutdown() }
        let memory = testMemory()
        let name = "avmu\(getpid() % 100000)"
        let mac: [UInt8] = [0x52, 0x54, 0, 0x12, 0x34, 0x56]
        let backend = try VirtioNet(options: .init(tap: name, mac: mac))
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(features: 1 << 5, queueCount: 2) == 0xF)
        var configMac: [UInt8] = []
        for i in 0..<6 { configMac.append(UInt8(await driver.r(0x2000 + UInt64(i), 1))) }
        #expect(configMac == mac)

        // A raw socket on the host side of the TAP.
        let sock = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), Int32(UInt16(0x88B5).bigEndian))
        #expect(sock >= 0)
        defer { close(sock) }
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_protocol = UInt16(0x88B5).bigEndian
        address.sll_ifindex = Int32(if_nametoindex(name))
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, UInt32(MemoryLayout<sockaddr_ll>.size)) } }

        // Guest → host.
        var frame = [UInt8](repeating: 0xFF, count: 6) + mac + [0x88, 0xB5] + Array("ACTORVMM-NET-TX".utf8)
        frame += [UInt8](repeating: 0, count: 60 - frame.count)
        let packet = [UInt8](repeating: 0, count: 12) + frame
        driver.queues[1].post([(driver.queues[1].allocate(packet.count, bytes: packet), UInt32(packet.count), false)])
        await driver.kick(1)
        var received = [UInt8](repeating: 0, count: 2048)
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, UInt32(MemoryLayout<timeval>.size))
        let n = received.withUnsafeMutableBytes { recv(sock, $0.baseAddress, $0.count, 0) }
        #expect(n == 60)
        #expect(n > 0 && Array(received[14..<29]) == Array("ACTORVMM-NET-TX".utf8))

        // Host → guest: receive buffers, then a frame injected on the host side. The kernel may send its
        // own frames (IPv6 multicast listener reports) when the interface comes up: skip those.
        var buffers: [UInt16: GuestAddress] = [:]
        for _ in 0..<6 {
            let buffer = driver.queues[0].allocate(1526 + 12)
            buffers[driver.queues[0].post([(buffer, 1526 + 12, true)])] = buffer
        }
        await driver.kick(0)
        var inject = [UInt8](repeating: 0xFF, count: 6) + [2, 0, 0, 0, 0, 1, 0x88, 0xB5] + Array("ACTORVMM-NET-RX".utf8)
        inject += [UInt8](repeating: 0, count: 60 - inject.count)
        var found: [UInt8]?
        for attempt in 0..<1000 where found == nil {
            // Re-inject now and then: under load the first frame may come before the TAP is watched again.
            if attempt % 50 == 0 { _ = inject.withUnsafeBytes { send(sock, $0.baseAddress, $0.count, 0) } }
            var recycled = false
            for entry in driver.queues[0].takeUsed() {
                let bytes = try memory.readBytes(at: buffers[UInt16(entry.head)]!, count: Int(entry.length))
                #expect(bytes[10] == 1)  // num_buffers
                if bytes.count >= 12 + 14, bytes[24] == 0x88, bytes[25] == 0xB5 { found = bytes }
                // Give the buffer back, as a driver does, so the kernel's own frames cannot starve the test.
                let buffer = driver.queues[0].allocate(1526 + 12)
                buffers[driver.queues[0].post([(buffer, 1526 + 12, true)])] = buffer
                recycled = true
            }
            if recycled { await driver.kick(0) }
            if found == nil { try await Task.sleep(for: .milliseconds(5)) }
        }
        let delivered = try #require(found)
        #expect(delivered.count == 12 + 60)
        #expect(Array(delivered[(12 + 14)..<(12 + 29)]) == Array("ACTORVMM-NET-RX".utf8))
    }
}
