@testable import Cli
@testable import Devices
import Glibc
import Testing

/// What `--event-loops per-queue` gives each kind of prepared virtio device (DevicePlacement.swift): a queue
/// worker per virtio-blk queue and per virtio-net queue pair, with backends of their own; none for rng.
@Suite struct DevicePlacementTests {
    @Test func queueGroupsFollowTheDevice() throws {
        let path = "/tmp/actor-vmm-placement-\(getpid()).raw"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0 && ftruncate(fd, 1 << 20) == 0)
        close(fd)
        defer { unlink(path) }
        let disk = PreparedDevices.Virtio(id: "d", idPrefix: "_disk",
                                          opened: .block(try VirtioBlock.open(.init(path: path, numQueues: 3))))
        #expect(disk.queueGroups == [[0], [1], [2]])
        let device = disk.makeDeviceBackendForQueueWorkers() as? VirtioBlock
        #expect(device?.engine == .sync, "the device's own backend serves no queue: no io_uring")
        #expect(device?.queueCount == 3)
        let worker = disk.queueBackendMaker(1)() as? VirtioBlock
        #expect(worker?.queueCount == 3 && worker?.options.engine == .auto, "a worker's backend is the disk as configured")
        // Inline writes (BlockInlineWrites.swift): a worker's and a per-device disk's loop are their own.
        #expect(worker?.options.loopOfItsOwn == true)
        #expect((disk.makeBackend(loopOfItsOwn: true) as? VirtioBlock)?.options.loopOfItsOwn == true)
        #expect((disk.makeBackend() as? VirtioBlock)?.options.loopOfItsOwn == false, "the shared loop is not its own")
        let rng = PreparedDevices.Virtio(id: "__rng", idPrefix: "", opened: .rng(try VirtioRng.open(path: "/dev/urandom")))
        #expect(rng.queueGroups == nil, "virtio-rng has no queue workers (a loop per device)")
    }
}
