// Row 3's host-driver rows: the real VirtioBlock behind the real VirtioPciDevice on a pinned loop, its
// doorbell eventfd watched as in a VM, but no guest and no KVM. A host thread (placed like the vCPU) plays
// the test guest's `bench-blk` driver — the same ring layout (chains of header, 4 KiB, status; the available
// ring filled once, so a doorbell is one store to avail.idx), the same blocks — writes the doorbell eventfd
// itself (KVM's ioeventfd would), and polls the used index instead of waiting for an interrupt. The
// interrupt is an 8-byte write to an eventfd nobody waits on (KVM's irqfd would wake the vCPU). So the
// doorbell -> interrupt time is the VMM's own work plus the I/O and the two system calls, without KVM's
// wake-ups: what row 3 would show on a host where notifications cost what their system calls cost.
// Needs no /dev/kvm access in the measured part, so it also runs under valgrind (callgrind).
import ActorVmm
import CAllocCount
import CKvm
import Devices
import EpollLoop
import Glibc
import Synchronization

/// MSI vectors whose trigger writes an eventfd, as a KVM irqfd's does, with no reader.
final class EventfdMsi: MsiController {
    final class Vector: MsiTarget {
        let gsi: UInt32
        let fd: Int32
        init(gsi: UInt32, fd: Int32) { self.gsi = gsi; self.fd = fd }
        func trigger() { EventFD.signalRaw(fd) }
        deinit { close(fd) }
    }

    /// The vectors' eventfds, by vector (the driver polls them without blocking: no waiter to wake).
    let fds = Mutex<[Int32]>([])

    func allocate(count: Int) throws(KvmError) -> [any MsiTarget] {
        let vectors = (0..<count).map { Vector(gsi: UInt32($0), fd: eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))) }
        fds.withLock { $0 += vectors.map(\.fd) }
        return vectors
    }

    func route(_ vector: any MsiTarget, message: (address: UInt64, data: UInt32)?) {}
}

/// One guest-less run: `warmup + count` doorbells of `depth` requests on a fresh device.
struct BlkHostDriver {
    let image: String
    let write: Bool
    let depth: Int
    let count: Int
    let warmup: Int
    let driverCPU: Int?
    let loopCPU: Int?

    // Guest-physical layout in 16 MiB of RAM (the queue as the test guest lays it out: size 128 >= 32 × 3).
    static let queueSize: UInt16 = 128, chain = 3
    static let table: UInt64 = 0x10_0000, avail: UInt64 = 0x10_1000, used: UInt64 = 0x10_2000
    static let headers: UInt64 = 0x20_0000, statuses: UInt64 = 0x20_1000, data: UInt64 = 0x30_0000

    struct Output {
        var services: [DoorbellService]
        var counters: VirtioCounters
        var loopAllocations: UInt64
    }

    func run() async throws -> Output {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 16 << 20)])
        let loop = try Loops.make("bench-virtio", cpu: loopCPU)
        defer { loop.shutdown() }
        let msi = EventfdMsi()
        let device = try VirtioPciDevice(name: "bench-host", loop: loop, memory: memory,
                                         backend: try VirtioBlock(options: .init(path: image)),
                                         barAddress: 0xC000_0000, vectors: try msi.allocate(count: 2), msiController: msi)
        try await device.watchDoorbells()
        try await configure(device, memory: memory)
        let doorbells = warmup + count
        let recorder = VirtioEventRecorder(capacity: doorbells * (depth + 2) + 1024)
        await device.attach(recorder: recorder)
        await VirtioGuestRun.onLoop(loop) { alloc_count_begin() }
        let failure = Mutex<String?>(nil)
        let (write, depth, doorbell, interrupt) = (write, depth, device.notifyFDs[0], msi.fds.withLock { $0[1] })
        let driver = try HostThread(cpu: driverCPU) {
            let problem = Self.drive(memory: memory, doorbell: doorbell, interrupt: interrupt, write: write, depth: depth,
                                     doorbells: doorbells)
            failure.withLock { $0 = problem }
        }
        try driver.join()
        let allocations = await VirtioGuestRun.onLoop(loop) { alloc_count_end() }
        await device.stop()
        if let failure = failure.withLock({ $0 }) { throw BenchError("host driver: \(failure)") }
        let services = try DoorbellService.group(recorder.events(), requests: depth)
        guard services.count == doorbells else { throw BenchError("the device recorded \(services.count) doorbells, expected \(doorbells)") }
        return Output(services: Array(services.suffix(count)), counters: await device.counters, loopAllocations: allocations)
    }

    /// What the test guest's driver does before DRIVER_OK: decoding, bus mastering and MSI-X on, VERSION_1
    /// only, queue 0 at the addresses above with vector 1, the chains and the available ring written once.
    func configure(_ device: VirtioPciDevice, memory: GuestMemory) async throws {
        await device.configWrite(offset: 0x04, width: 2, value: 0x6)
        await device.configWrite(offset: 0x42, width: 2, value: 0x8000)
        for vector in 0...1 {
            let entry = 0x4000 + UInt64(vector) * 16
            await device.write(offset: entry, width: 4, value: 0xFEE0_0000)
            await device.write(offset: entry + 8, width: 4, value: UInt64(0x40 + vector))
            await device.write(offset: entry + 12, width: 4, value: 0)
        }
        for status: UInt64 in [0, 1, 3] { await device.write(offset: 0x14, width: 1, value: status) }
        await device.write(offset: 0x08, width: 4, value: 1)
        await device.write(offset: 0x0C, width: 4, value: 1)  // VERSION_1
        await device.write(offset: 0x14, width: 1, value: 0xB)
        let slots = BlkBench.slots
        for slot in 0..<slots {
            let header = Self.headers + UInt64(slot * 16)
            try memory.write(write ? UInt32(1) : UInt32(0), at: GuestAddress(header))
            try memory.write(UInt32(0), at: GuestAddress(header + 4))
            try memory.write(UInt64(slot * 8), at: GuestAddress(header + 8))
            let base = Self.table + UInt64(slot * Self.chain * 16)
            let parts: [(UInt64, UInt32, UInt16)] = [
                (header, 16, 0), (Self.data + UInt64(slot * 4096), 4096, write ? 0 : 2), (Self.statuses + UInt64(slot), 1, 2),
            ]
            for (part, (address, length, flags)) in parts.enumerated() {
                let at = base + UInt64(part * 16)
                let next = part + 1 < Self.chain
                try memory.write(address, at: GuestAddress(at))
                try memory.write(length, at: GuestAddress(at + 8))
                try memory.write(flags | (next ? 1 : 0), at: GuestAddress(at + 12))
                try memory.write(next ? UInt16(slot * Self.chain + part + 1) : 0, at: GuestAddress(at + 14))
            }
            try memory.zero(at: GuestAddress(Self.data + UInt64(slot * 4096)), count: 4096)
            if write { try memory.write(bytes: [UInt8](repeating: BlkBench.patternByte(slot), count: 4096), at: GuestAddress(Self.data + UInt64(slot * 4096))) }
        }
        for entry in 0..<Int(Self.queueSize) {
            try memory.write(UInt16((entry % slots) * Self.chain), at: GuestAddress(Self.avail + 4 + 2 * UInt64(entry)))
        }
        try memory.write(bytes: [UInt8](repeating: 0xFF, count: slots), at: GuestAddress(Self.statuses))
        await device.write(offset: 0x16, width: 2, value: 0)
        await device.write(offset: 0x18, width: 2, value: UInt64(Self.queueSize))
        await device.write(offset: 0x1A, width: 2, value: 1)
        await device.write(offset: 0x20, width: 8, value: Self.table)
        await device.write(offset: 0x28, width: 8, value: Self.avail)
        await device.write(offset: 0x30, width: 8, value: Self.used)
        await device.write(offset: 0x1C, width: 2, value: 1)
        await device.write(offset: 0x14, width: 1, value: 0xF)
        guard await device.isActive else { throw BenchError("the device did not accept the host driver's set-up") }
    }

    /// The driver thread: per doorbell, `depth` more requests on the available ring, the doorbell eventfd
    /// written, the interrupt eventfd polled (non-blocking reads: the device's write wakes nobody) until an
    /// interrupt came with all `depth` requests on the used ring, their status bytes checked and
    /// reset (and the first read of every block checked against the image's pattern). Nil, or what went wrong.
    static func drive(memory: GuestMemory, doorbell: Int32, interrupt: Int32, write: Bool, depth: Int, doorbells: Int) -> String? {
        let slots = BlkBench.slots
        var published: UInt16 = 0
        do {
            for index in 0..<doorbells {
                let first = (index * depth) % slots
                published &+= UInt16(depth)
                try memory.storeRelease16(published, at: GuestAddress(avail + 2))
                EventFD.signalRaw(doorbell)
                // Completions through the ring may come in several batches, each with its interrupt.
                var spins = 0
                while true {
                    if EventFD.drainRaw(interrupt) != 0, try memory.loadAcquire16(at: GuestAddress(used + 2)) == published { break }
                    spins += 1
                    if spins > 20_000_000 { return "doorbell \(index): no interrupt for the last of \(depth) requests" }
                    if spins % 64 == 0 { sched_yield() }
                }
                for slot in first..<(first + depth) {
                    let status: UInt8 = try memory.read(at: GuestAddress(statuses + UInt64(slot)))
                    guard status == 0 else { return "doorbell \(index): slot \(slot) status \(status)" }
                    try memory.write(UInt8(0xFF), at: GuestAddress(statuses + UInt64(slot)))
                    if !write && index * depth < slots {
                        let bytes = try memory.readBytes(at: GuestAddress(data + UInt64(slot * 4096)), count: 4096)
                        guard bytes.allSatisfy({ $0 == BlkBench.patternByte(slot) }) else { return "slot \(slot): read data differs" }
                    }
                }
            }
        } catch {
            return "\(error)"
        }
        return nil
    }
}
