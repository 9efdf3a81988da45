// Row 7: queue placement. A two-queue virtio-blk disk at queue depth 32 — 16 4 KiB reads posted on each
// queue, both doorbells rung together — with both queues served on the device's one loop (`--event-loops
// per-device`) or each on its queue worker's loop (`per-queue`), in the same run, rounds interleaved.
//
// The driver is the host's: a thread plays the guest (descriptors and rings in guest RAM, no KVM), rings the
// queues' doorbell eventfds (what KVM's ioeventfds write) and sleeps in poll() on the two queue vectors'
// eventfds (what KVM's irqfds would turn into MSIs) until both queues have all 16 back. Threads are not
// pinned: on a 2-CPU host, the driver and two or three loops share both CPUs, which is the question asked.
import ActorVmm
import CKvm
import Devices
import EpollLoop
import Glibc
import Synchronization

struct QueueLoopsConfig: Sendable, Equatable {
    let perQueue: Bool

    var id: String { perQueue ? "queues-per-queue" : "queues-per-device" }
    var label: String {
        perQueue ? "2-queue disk, QD 32, a loop per queue" : "2-queue disk, QD 32, one loop per device (floor)"
    }

    static let all = [QueueLoopsConfig(perQueue: false), QueueLoopsConfig(perQueue: true)]
}

/// One run of one configuration: per batch (32 requests, both queues), its time / 32, in nanoseconds; and
/// where a batch's time goes, from the serving loops' recorders: doorbells written → the first loop sees
/// one (wake-up), → the last request on a used ring (service), → the driver back from poll() (interrupt back).
struct QueueLoopsSamples {
    var perRequest: [Double] = []
    var requestsPerSecond = 0.0
    var wakeup: [Double] = []
    var service: [Double] = []
    var interruptBack: [Double] = []
    /// Per batch, per serving loop: its own first doorbell → its last completion (per-device: the one loop;
    /// per-queue: each worker's, so two per batch). Service ≈ this: the loops did not overlap.
    var serviceEachLoop: [Double] = []
}

/// A batch as the driver saw it, in TSC ticks: posting started, doorbells written, all 32 back.
struct DriverBatch: Sendable {
    var start: UInt64
    var rang: UInt64
    var end: UInt64
}

/// An MSI vector that is an eventfd the driver thread polls.
final class PolledVector: MsiTarget {
    let gsi: UInt32
    let fd: Int32
    init(gsi: UInt32) {
        self.gsi = gsi
        fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
    }
    deinit { close(fd) }
    func trigger() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }
}

final class PolledMsi: MsiController {
    let vectors: [PolledVector]
    init(count: Int) { vectors = (0..<count).map { PolledVector(gsi: UInt32(24 + $0)) } }
    func allocate(count: Int) throws(KvmError) -> [any MsiTarget] { Array(vectors.prefix(count)) }
    func route(_ vector: any MsiTarget, message: (address: UInt64, data: UInt32)?) {}
}

struct QueueLoopsBench {
    let options: BenchOptions
    let clock: TscClock

    static let queueSize: UInt16 = 64
    static let perQueue = 16
    static let ring: UInt64 = 0x10_0000, data: UInt64 = 0x40_0000

    func run(progress: (String) -> Void) async -> [(QueueLoopsConfig, Result<[QueueLoopsSamples], BenchError>)] {
        let image = (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp") + "/actor-vmm-bench-queues-\(getpid()).raw"
        defer { unlink(image) }
        do {
            try writeFile(image, bytes: [UInt8](repeating: 0x5A, count: 1 << 20))
        } catch {
            return QueueLoopsConfig.all.map { ($0, .failure(error)) }
        }
        var results: [String: Result<[QueueLoopsSamples], BenchError>] = [:]
        for round in 0..<options.rounds {
            for step in 0..<QueueLoopsConfig.all.count {
                let config = QueueLoopsConfig.all[(round + step) % QueueLoopsConfig.all.count]
                if case .failure = results[config.id] { continue }
                do {
                    let samples = try await runOnce(config, image: image, batches: max(1, options.blkBatches / options.rounds))
                    results[config.id] = .success(((try? results[config.id]?.get()) ?? []) + [samples])
                    progress("queues round \(round + 1)/\(options.rounds): \(config.label): p50 "
                             + "\(micros(Summary(samples.perRequest)?.p50 ?? 0)) us per request, \(fixed(samples.requestsPerSecond, 0)) requests/s; "
                             + "per batch p50: wake-up \(micros(Summary(samples.wakeup)?.p50 ?? 0)) us, service "
                             + "\(micros(Summary(samples.service)?.p50 ?? 0)) us (each loop's own \(micros(Summary(samples.serviceEachLoop)?.p50 ?? 0)) us), "
                             + "interrupt back \(micros(Summary(samples.interruptBack)?.p50 ?? 0)) us")
                } catch {
                    let failure = error as? BenchError ?? BenchError("\(error)")
                    results[config.id] = .failure(failure)
                    progress("queues: \(config.label): \(failure)")
                }
            }
        }
        return QueueLoopsConfig.all.map { ($0, results[$0.id] ?? .failure(BenchError("not run"))) }
    }

    func runOnce(_ config: QueueLoopsConfig, image: String, batches: Int) async throws -> QueueLoopsSamples {
        let memory = try benchMemory(mebibytes: 16)
        let opened: VirtioBlock.Opened
        do {
            opened = try VirtioBlock.open(.init(path: image, numQueues: 2, queueSize: Self.queueSize))
        } catch {
            throw BenchError("cannot open the image: \(error)")
        }
        let msi = PolledMsi(count: 3)
        let vectors = try msi.allocate(count: 3)
        var loops = [try Loops.make("bench-disk", cpu: nil)]
        defer { for loop in loops { loop.shutdown() } }
        let device: VirtioPciDevice
        if config.perQueue {
            device = try VirtioPciDevice(name: "disk", loop: loops[0], memory: memory, backend: VirtioBlock(opened.forDeviceWithQueueWorkers),
                                         barAddress: 0xC000_0000, vectors: vectors, msiController: msi)
            var workers: [VirtioPciDevice] = []
            for queue in 0..<2 {
                loops.append(try Loops.make("bench-disk-q\(queue)", cpu: nil))
                workers.append(try VirtioPciDevice(name: "disk-q\(queue)", loop: loops[queue + 1], memory: memory,
                                                   backend: VirtioBlock(opened), barAddress: 0xC000_0000, vectors: vectors,
                                                   msiController: msi, coordinator: device, servedQueues: [queue]))
            }
            await device.adopt(workers: workers)
            for worker in workers { try await worker.watchDoorbells() }
        } else {
            device = try VirtioPciDevice(name: "disk", loop: loops[0], memory: memory, backend: VirtioBlock(opened),
                                         barAddress: 0xC000_0000, vectors: vectors, msiController: msi)
        }
        try await device.watchDoorbells()
        let serving = config.perQueue ? await device.queueWorkers : [device]
        let recorders = serving.map { _ in VirtioEventRecorder(capacity: 48 * (batches + 20)) }
        for (actor, recorder) in zip(serving, recorders) { await actor.attach(recorder: recorder) }
        let outcome: Result<[DriverBatch], BenchError>
        do {
            try await Self.initialize(device, memory: memory)
            // The timed part on a thread of its own (the driver), never on the Swift pool.
            let result = Mutex<Result<[DriverBatch], BenchError>>(.success([]))
            let fds = device.notifyFDs, vectorFDs = msi.vectors.map(\.fd)
            let thread = try HostThread(cpu: nil) {
                result.withLock { $0 = Self.drive(memory: memory, doorbells: fds, vectors: Array(vectorFDs[1...2]), batches: batches + 20) }
            }
            try thread.join()
            outcome = result.withLock { $0 }
        } catch {
            outcome = .failure(error as? BenchError ?? BenchError("\(error)"))
        }
        let counters = await device.totalCounters()
        await device.stop()
        let batchesRun = try outcome.get().dropFirst(20)  // warm-up
        guard counters.errors == 0 else { throw BenchError("\(counters.errors) device errors") }
        var samples = QueueLoopsSamples()
        samples.perRequest = batchesRun.map { clock.nanoseconds($0.end &- $0.start) / Double(2 * Self.perQueue) }
        let total = batchesRun.reduce(0.0) { $0 + clock.nanoseconds($1.end &- $1.start) }
        samples.requestsPerSecond = total > 0 ? Double(batchesRun.count * 2 * Self.perQueue) / (total / 1e9) : 0
        for recorder in recorders {
            let own = recorder.events()
            var index = own.startIndex
            for batch in batchesRun {
                while index < own.endIndex && own[index].tsc < batch.start { index += 1 }
                var first: UInt64?, last: UInt64?
                while index < own.endIndex && own[index].tsc <= batch.end {
                    if own[index].kind == .doorbell { first = first ?? own[index].tsc }
                    if own[index].kind == .completed { last = own[index].tsc }
                    index += 1
                }
                if let first, let last, last >= first { samples.serviceEachLoop.append(clock.nanoseconds(last &- first)) }
            }
        }
        // Every serving loop's events, in time order, split by the driver's batches.
        let events = recorders.flatMap { $0.events() }.sorted { $0.tsc < $1.tsc }
        var next = events.startIndex
        for batch in batchesRun {
            while next < events.endIndex && events[next].tsc < batch.start { next += 1 }
            var firstDoorbell: UInt64?, lastCompletion: UInt64?, lastInterrupt: UInt64?
            while next < events.endIndex && events[next].tsc <= batch.end {
                let event = events[next]
                switch event.kind {
                case .doorbell: firstDoorbell = firstDoorbell ?? event.tsc
                case .completed: lastCompletion = event.tsc
                case .interrupt: lastInterrupt = event.tsc
                }
                next += 1
            }
            guard let firstDoorbell, let lastCompletion, let lastInterrupt, firstDoorbell >= batch.rang else { continue }
            samples.wakeup.append(clock.nanoseconds(firstDoorbell &- batch.rang))
            samples.service.append(clock.nanoseconds(lastCompletion &- firstDoorbell))
            samples.interruptBack.append(clock.nanoseconds(batch.end &- lastInterrupt))
        }
        return samples
    }

    /// The guest driver's set-up through the registers: BME, MSI-X (vector q+1 for queue q), features
    /// (VERSION_1 only), both queues at `ring + q * 0x10000`, DRIVER_OK.
    static func initialize(_ device: VirtioPciDevice, memory: GuestMemory) async throws {
        await device.configWrite(offset: 0x04, width: 2, value: 0x6)
        await device.configWrite(offset: 0x42, width: 2, value: 0x8000)
        for vector in 0...2 {
            await device.write(offset: 0x4000 + UInt64(vector) * 16 + 8, width: 4, value: UInt64(0x40 + vector))
            await device.write(offset: 0x4000 + UInt64(vector) * 16 + 12, width: 4, value: 0)
        }
        for status: UInt64 in [0, 1, 3] { await device.write(offset: 0x14, width: 1, value: status) }
        await device.write(offset: 0x08, width: 4, value: 1)
        await device.write(offset: 0x0C, width: 4, value: 1)  // VERSION_1
        await device.write(offset: 0x14, width: 1, value: 0xB)
        for queue in 0..<2 {
            let base = ring + UInt64(queue) * 0x10000
            try memory.zero(at: GuestAddress(base), count: 0x3000)
            await device.write(offset: 0x16, width: 2, value: UInt64(queue))
            await device.write(offset: 0x18, width: 2, value: UInt64(queueSize))
            await device.write(offset: 0x1A, width: 2, value: UInt64(queue + 1))
            await device.write(offset: 0x20, width: 8, value: base)
            await device.write(offset: 0x28, width: 8, value: base + 0x1000)
            await device.write(offset: 0x30, width: 8, value: base + 0x2000)
            await device.write(offset: 0x1C, width: 2, value: 1)
            // Request r: header (read, sector 8r), 4 KiB of data, status; descriptors 3r, 3r+1, 3r+2.
            for request in 0..<perQueue {
                let header = GuestAddress(data + UInt64(queue * perQueue + request) * 0x2000)
                try memory.write(UInt32(0), at: header)
                try memory.write(UInt64(8 * request), at: GuestAddress(header.rawValue + 8))
                let parts: [(UInt64, UInt32, UInt16)] = [(header.rawValue, 16, 1), (header.rawValue + 0x1000, 4096, 3),
                                                         (header.rawValue + 0x20, 1, 2)]
                for (index, part) in parts.enumerated() {
                    let descriptor = GuestAddress(base + UInt64(3 * request + index) * 16)
                    try memory.write(part.0, at: descriptor)
                    try memory.write(part.1, at: GuestAddress(descriptor.rawValue + 8))
                    try memory.write(part.2, at: GuestAddress(descriptor.rawValue + 12))  // NEXT, WRITE
                    try memory.write(UInt16(3 * request + index + 1), at: GuestAddress(descriptor.rawValue + 14))
                }
            }
        }
        await device.write(offset: 0x14, width: 1, value: 0xF)
        guard await device.read(offset: 0x14, width: 1) == 0xF else { throw BenchError("the device refused DRIVER_OK") }
    }

    /// `batches` times: 16 requests on each queue, both doorbells, wait for all 32 back; each batch's TSC stamps.
    static func drive(memory: GuestMemory, doorbells: [Int32], vectors: [Int32], batches: Int) -> Result<[DriverBatch], BenchError> {
        var ticks: [DriverBatch] = []
        ticks.reserveCapacity(batches)
        var posted: UInt16 = 0
        var polls = vectors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        do {
            for _ in 0..<batches {
                let start = ckvm_rdtsc()
                for queue in 0..<2 {
                    let avail = ring + UInt64(queue) * 0x10000 + 0x1000
                    for request in 0..<perQueue {
                        let slot = (posted &+ UInt16(request)) % queueSize
                        try memory.write(UInt16(3 * request), at: GuestAddress(avail + 4 + 2 * UInt64(slot)))
                    }
                    try memory.write(posted &+ UInt16(perQueue), at: GuestAddress(avail + 2))
                }
                posted &+= UInt16(perQueue)
                for fd in doorbells.prefix(2) { EventFD.signalRaw(fd) }
                let rang = ckvm_rdtsc()
                while true {
                    var done = true
                    for queue in 0..<2 {
                        let used: UInt16 = try memory.read(at: GuestAddress(ring + UInt64(queue) * 0x10000 + 0x2000 + 2))
                        if used != posted { done = false }
                    }
                    if done { break }
                    guard poll(&polls, nfds_t(polls.count), 5000) > 0 else { return .failure(BenchError("no interrupt in 5 s")) }
                    for fd in vectors { EventFD.drainRaw(fd) }
                }
                ticks.append(DriverBatch(start: start, rang: rang, end: ckvm_rdtsc()))
            }
        } catch {
            return .failure(BenchError("guest memory: \(error)"))
        }
        return .success(ticks)
    }
}
