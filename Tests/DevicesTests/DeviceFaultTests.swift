import ActorVmm
@testable import Devices
import EpollLoop
import Foundation
import Glibc
import Testing

/// Host faults under running devices, injected for real: a full file system (ENOSPC), a file whose I/O fails
/// (EIO), the disk image removed or shrunk, the TAP deleted. The guest gets an error status or a quiet link;
/// the VMM carries on and its loop stays idle.
@Suite(.serialized) struct DeviceFaultTests {
    static let isRoot = geteuid() == 0

    /// A disk on a 64 KiB tmpfs: writes past the free space fail with ENOSPC, reported as IOERR; what was
    /// written stays readable and the device keeps serving.
    @Test(.enabled(if: isRoot, "needs root to mount a tmpfs")) func diskFullIsIOERR() async throws {
        let directory = "/tmp/actor-vmm-test-\(getpid())-full"
        mkdir(directory, 0o700)
        guard mount("tmpfs", directory, "tmpfs", 0, "size=64k") == 0 else {
            rmdir(directory)
            Issue.record("cannot mount a tmpfs: \(String(cString: strerror(errno)))")
            return
        }
        defer { umount(directory); rmdir(directory) }
        let image = directory + "/disk.raw"
        let fd = open(image, O_RDWR | O_CREAT, 0o644)
        #expect(ftruncate(fd, 1 << 20) == 0, "a sparse 1 MiB image on 64 KiB")
        close(fd)

        let loop = try EventLoop(name: "t-blk-full")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioBlock(options: .init(path: image)), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        let chunk = [UInt8](repeating: 0x5A, count: 16 << 10)
        var statuses: [UInt8] = []
        for index in 0..<12 {  // 192 KiB into 64 KiB of space
            statuses.append(await driver.blockRequest(type: 1, sector: UInt64(index * 32), data: chunk).status)
        }
        #expect(statuses.first == 0 && statuses.last == 1, "\(statuses)")
        #expect(!statuses.contains { $0 != 0 && $0 != 1 })
        var zeroes: [UInt8] = []
        appendLE(&zeroes, UInt64(1024)); appendLE(&zeroes, UInt32(512)); appendLE(&zeroes, UInt32(0))
        #expect(await driver.blockRequest(type: 13, sector: 0, extraReadable: zeroes).status == 1, "write-zeroes on a full disk")
        let read = await driver.blockRequest(type: 0, sector: 0, readLength: chunk.count)
        #expect(read.status == 0 && read.data == chunk, "what was written is still there")
        #expect(await driver.blockRequest(type: 4, sector: 0).status == 0, "flush")
        #expect(await device.counters.errors >= 2)
    }

    /// A backend whose descriptor fails every transfer with EIO (/proc/self/mem at unmapped address 0, a real
    /// kernel EIO): reads, writes and flushes are IOERR; nothing is copied into the guest.
    @Test func ioErrorsAreIOERR() async throws {
        let fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC)
        try #require(fd >= 0)
        var probe = [UInt8](repeating: 0, count: 512)
        #expect(pread(fd, &probe, 512, 0) == -1 && errno == EIO, "the fault being injected")
        let opened = VirtioBlock.Opened(file: OwnedDescriptor(fd), options: .init(path: "/proc/self/mem"),
                                         capacitySectors: 64, idBytes: [UInt8](repeating: 0, count: 20))
        let loop = try EventLoop(name: "t-blk-eio")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(VirtioBlock(opened), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        let read = await driver.blockRequest(type: 0, sector: 0, readLength: 512)
        #expect(read.status == 1 && read.used == 1, "IOERR, only the status byte written")
        #expect(await driver.blockRequest(type: 1, sector: 8, data: [UInt8](repeating: 1, count: 512)).status == 1)
        #expect(await driver.blockRequest(type: 4, sector: 0).status == 1, "flush")
        #expect(await device.counters.errors == 3)
    }

    /// The image removed while the VM runs: the open descriptor keeps it, so I/O goes on. Shrunk under the
    /// device: reads past the new end are IOERR.
    @Test func diskRemovedOrShrunkWhileRunning() async throws {
        let file = TempFile(size: 64 << 10, fill: 0x33)
        let loop = try EventLoop(name: "t-blk-gone")
        defer { loop.shutdown() }
        let memory = testMemory()
        let (device, msi) = try makeDevice(try VirtioBlock(options: .init(path: file.path)), memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        await driver.initialize(queueCount: 1)
        let shrink = open(file.path, O_RDWR)
        defer { close(shrink) }
        #expect(unlink(file.path) == 0)
        let data = [UInt8](repeating: 0x77, count: 4096)
        #expect(await driver.blockRequest(type: 1, sector: 16, data: data).status == 0)
        #expect(await driver.blockRequest(type: 0, sector: 16, readLength: 4096).data == data)
        #expect(await driver.blockRequest(type: 4, sector: 0).status == 0)
        #expect(ftruncate(shrink, 4096) == 0)
        #expect(await driver.blockRequest(type: 0, sector: 64, readLength: 4096).status == 1, "past the new end")
        #expect(await driver.blockRequest(type: 0, sector: 0, readLength: 4096).data == [UInt8](repeating: 0x33, count: 4096))
    }

    /// The TAP deleted on the host while the guest has receive buffers posted: the descriptor then fails with
    /// EBADFD and epoll reports it ready for ever. The device stops watching it (one error counted), so the
    /// loop stays idle; transmits are counted as drops.
    @Test(.enabled(if: isRoot, "needs root to create and delete a TAP")) func tapRemovedWhileRunning() async throws {
        let loopName = "t-net-gone"
        let loop = try EventLoop(name: loopName)
        defer { loop.shutdown() }
        let memory = testMemory()
        let name = "avmg\(getpid() % 100000)"
        let backend = try VirtioNet(options: .init(tap: name, mac: [0x52, 0x54, 0, 0, 0, 1]))
        let (device, msi) = try makeDevice(backend, memory: memory, loop: loop)
        var driver = VirtioDriver(device: device, memory: memory, msi: msi)
        #expect(await driver.initialize(features: 1 << 5, queueCount: 2) == 0xF)
        for _ in 0..<4 {
            driver.queues[0].post([(driver.queues[0].allocate(1538), 1538, true)])
        }
        await driver.kick(0)
        let delete = Process()
        delete.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        delete.arguments = ["link", "delete", name]
        try delete.run()
        delete.waitUntilExit()
        #expect(delete.terminationStatus == 0)
        usleep(200_000)
        let before = threadCPUTicks(named: loopName)
        usleep(500_000)
        let spent = threadCPUTicks(named: loopName) - before
        #expect(spent < 10, "the loop is idle, not spinning on the dead TAP: \(spent) ticks in 0.5 s")
        #expect(await device.counters.errors == 1)
        let packet = [UInt8](repeating: 0, count: 12 + 60)
        driver.queues[1].post([(driver.queues[1].allocate(packet.count, bytes: packet), UInt32(packet.count), false)])
        await driver.kick(1)
        #expect(driver.queues[1].takeUsed().count == 1, "the transmit completes")
        #expect(await device.counters.dropped == 1)
    }
}

/// User plus system CPU time of this process's thread called `name`, in clock ticks (-1 if none).
func threadCPUTicks(named name: String) -> Int {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    for task in tasks {
        let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
        guard comm.trimmingCharacters(in: .whitespacesAndNewlines) == name,
              let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (proc(5)).
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }
    return -1
}
