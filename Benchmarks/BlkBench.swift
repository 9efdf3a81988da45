// Row 3: virtio-blk request service time — the device loop sees the doorbell → requests served with the real
// VirtioBlock → used ring updated → irqfd written — for 4 KiB reads and writes at queue depth 1 and 32,
// side by side with pread/pwrite of the same 4 KiB blocks of the same file, on the same (pinned) loop thread,
// in the same run.
//
// The scratch image lives in $TMPDIR (else /tmp), is opened like `--disk path=...` (page cache, no
// O_DIRECT), and block s (4 KiB, s < 32) holds the byte s + 1 throughout: the guest's reads are checked
// against it and its writes write the same bytes, so every configuration sees the same file (checked at the
// end). Request k of a run goes to block k mod 32, for the floors as for the device.
import ActorVmm
import CKvm
import Devices
import EpollLoop
import Glibc
import Synchronization

struct BlkConfig: Sendable, Equatable {
    let write: Bool
    let depth: Int
    let floor: Bool
    /// The notification floor: only the system calls every doorbell costs the device loop, no I/O.
    var notification = false
    /// The device driven by a host thread instead of the guest (BlkHostDriver.swift): no KVM.
    var host = false
    /// The woken QD 1 floor (BlkWokenFloor.swift): doorbell read, pread, interrupt write after a wake-up.
    var woken = false

    var operation: String { write ? "write" : "read" }
    var id: String {
        notification ? "blk-notification-qd1" : woken ? "blk-woken-pread-qd1" : floor ? "blk-p\(operation)-qd\(depth)"
            : host ? "blk-host-\(operation)-qd\(depth)" : "blk-\(operation)-qd\(depth)"
    }
    /// The row a device row is compared with; the notification floor is compared with pread, QD 1.
    var floorID: String { "blk-p\(operation)-qd\(depth)" }
    var label: String {
        notification ? "doorbell eventfd read + irqfd-like write (floor)"
            : woken ? "woken: eventfd read + pread + irqfd-like write (floor)"
            : floor ? "p\(operation) 4 KiB, same file, QD \(depth) (floor)"
            : "virtio-blk \(operation) 4 KiB, QD \(depth)" + (host ? ", host driver, no KVM" : "")
    }

    /// The notification floors, then per depth, per operation: floor, the device, the device without KVM.
    static let all: [BlkConfig] = [BlkConfig(write: false, depth: 1, floor: true, notification: true),
                                   BlkConfig(write: false, depth: 1, floor: true, woken: true)]
        + [1, 32].flatMap { depth in
            [false, true].flatMap { write in
                [BlkConfig(write: write, depth: depth, floor: true), BlkConfig(write: write, depth: depth, floor: false),
                 BlkConfig(write: write, depth: depth, floor: false, host: true)]
            }
        }
}

/// One run (one round) of one configuration; times in nanoseconds.
struct BlkSamples {
    /// Per doorbell (a batch of `depth` requests): its service time / depth. At QD 1 that is the request's
    /// service time; at QD 32 the mean per request within the batch.
    var perRequest: [Double] = []
    /// Per doorbell: the whole batch (floors: `depth` calls back to back).
    var batch: [Double] = []
    /// Device rows, per doorbell: doorbell seen → last request on the used ring (no interrupt yet), / depth.
    var perRequestToUsed: [Double] = []
    /// Device rows: the guest's view, TSC before the doorbell → interrupt handler, / depth.
    var guestPerRequest: [Double] = []
    /// Device rows, where the time goes: doorbell seen → first request on the used ring; between consecutive
    /// completions (QD > 1); last completion → irqfd written.
    var firstCompletion: [Double] = []
    var betweenCompletions: [Double] = []
    var lastCompletionToIrqfd: [Double] = []
    var requests = 0
    var busyNanoseconds = 0.0
    /// Device rows: malloc calls on the device loop's thread during the whole guest run (warm-up and
    /// register set-up included), and the requests it served.
    var loopAllocations: UInt64 = 0
    var allRequests = 0

    /// Adds one doorbell's service: the batch, per request, and the legs.
    mutating func addService(_ service: DoorbellService, depth: Int, clock: TscClock) {
        let batch = clock.nanoseconds(from: service.doorbell, to: service.interrupt)
        self.batch.append(batch)
        perRequest.append(batch / Double(depth))
        busyNanoseconds += batch
        let lastCompletion = service.completions[service.completions.count - 1]
        perRequestToUsed.append(clock.nanoseconds(from: service.doorbell, to: lastCompletion) / Double(depth))
        firstCompletion.append(clock.nanoseconds(from: service.doorbell, to: service.completions[0]))
        for (earlier, later) in zip(service.completions, service.completions.dropFirst()) {
            betweenCompletions.append(clock.nanoseconds(from: earlier, to: later))
        }
        lastCompletionToIrqfd.append(clock.nanoseconds(from: lastCompletion, to: service.interrupt))
    }

    /// Requests per second of the serving thread's busy time.
    var rate: Double { busyNanoseconds > 0 ? Double(requests) / (busyNanoseconds / 1e9) : 0 }
}

struct BlkBench {
    let guestPath: String
    let options: BenchOptions
    let clock: TscClock

    static let slots = 32
    static let blockSize = 4096
    static let imageSize = 1 << 20
    static let sampleBuffer: UInt64 = 0x400_0000

    /// The loop's CPU: the cross-core CPU when there is one (the device works beside the vCPU), else the vCPU's.
    var loopCPU: Int? { options.crossCore ? options.pinLoop : options.pinVcpu }

    /// Runs every configuration, or (`guest` false: `--only blk-host`) those that need no guest.
    func run(guest: Bool = true, progress: (String) -> Void) async -> [(BlkConfig, Result<[BlkSamples], BenchError>)] {
        let configs = BlkConfig.all.filter { guest || $0.floor || $0.host }
        let image = scratchPath()
        defer { unlink(image) }
        do {
            try Self.writeImage(image)
        } catch {
            return configs.map { ($0, .failure(error)) }
        }
        var results: [String: Result<[BlkSamples], BenchError>] = [:]
        for round in 0..<options.rounds {
            for step in 0..<configs.count {
                let config = configs[(round + step) % configs.count]
                if case .failure = results[config.id] { continue }
                let count = max(1, (config.depth == 1 ? options.blkSamples : options.blkBatches) / options.rounds)
                do {
                    let samples = try await runOnce(config, image: image, count: count)
                    results[config.id] = .success(((try? results[config.id]?.get()) ?? []) + [samples])
                    progress("blk round \(round + 1)/\(options.rounds): \(config.label): p50 "
                             + "\(micros(Summary(samples.perRequest)?.p50 ?? 0)) us per request"
                             + (config.floor ? "" : ", \(samples.loopAllocations) mallocs on the loop for \(samples.allRequests) requests"))
                } catch {
                    let failure = error as? BenchError ?? BenchError("\(error)")
                    results[config.id] = .failure(failure)
                    progress("blk: \(config.label): \(failure)")
                }
            }
        }
        if let problem = Self.checkImage(image) {
            for config in configs where !config.floor && config.write { results[config.id] = .failure(BenchError(problem)) }
        }
        return configs.map { ($0, results[$0.id] ?? .failure(BenchError("not run"))) }
    }

    func scratchPath() -> String {
        let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        return directory + "/actor-vmm-bench-\(getpid()).raw"
    }

    /// The byte block `slot` holds (Tests/Guest/Sources/BenchVirtio.swift, `BenchBlk.pattern`).
    static func patternByte(_ slot: Int) -> UInt8 { UInt8(slot + 1) }

    static func writeImage(_ path: String) throws(BenchError) {
        var bytes = [UInt8](repeating: 0, count: imageSize)
        for slot in 0..<slots { for offset in 0..<blockSize { bytes[slot * blockSize + offset] = patternByte(slot) } }
        try writeFile(path, bytes: bytes)
    }

    /// Nil if blocks 0..<32 still hold the pattern, else what is wrong.
    static func checkImage(_ path: String) -> String? {
        guard let bytes = readFileBytes(path) else { return "cannot read the scratch image \(path)" }
        guard bytes.count == imageSize else { return "the scratch image is \(bytes.count) bytes, expected \(imageSize)" }
        for slot in 0..<slots where bytes[slot * blockSize..<(slot + 1) * blockSize].contains(where: { $0 != patternByte(slot) }) {
            return "block \(slot) of the scratch image no longer holds its pattern after the write rows"
        }
        return nil
    }

    func runOnce(_ config: BlkConfig, image: String, count: Int) async throws -> BlkSamples {
        let warmup = options.blkWarmup
        if config.floor { return try floor(config, image: image, count: count, warmup: warmup) }
        if config.host { return try await host(config, image: image, count: count, warmup: warmup) }
        let run = try await VirtioGuestRun(
            guestPath: guestPath, check: "bench-blk", parameters: "bench_qd=\(config.depth) bench_op=\(config.operation)",
            backend: .block(.init(path: image)), count: count, warmup: warmup, requestsPerDoorbell: config.depth,
            vcpuCPU: options.pinVcpu, loopCPU: loopCPU, sampleBuffer: Self.sampleBuffer).run()
        let doorbells = UInt64(count + warmup), depth = UInt64(config.depth)
        let transferred = config.write ? run.counters.bytesRead : run.counters.bytesWritten
        let expected = doorbells * depth * UInt64(config.write ? Self.blockSize : Self.blockSize + 1)
        guard run.counters.errors == 0, transferred == expected else {
            throw BenchError("device counters: \(run.counters.errors) errors, \(transferred) bytes moved, expected \(expected)")
        }
        var samples = BlkSamples()
        for (service, cycles) in zip(run.services, run.guestCycles) {
            samples.addService(service, depth: config.depth, clock: clock)
            samples.guestPerRequest.append(clock.nanoseconds(cycles) / Double(config.depth))
        }
        samples.requests = count * config.depth
        samples.loopAllocations = run.loopAllocations
        samples.allRequests = Int(doorbells * depth)
        return samples
    }

    /// The device driven from a host thread (BlkHostDriver.swift): the same legs as a guest run, no guest.
    func host(_ config: BlkConfig, image: String, count: Int, warmup: Int) async throws -> BlkSamples {
        let run = try await BlkHostDriver(image: image, write: config.write, depth: config.depth, count: count, warmup: warmup,
                                          driverCPU: options.pinVcpu, loopCPU: loopCPU).run()
        var samples = BlkSamples()
        for service in run.services { samples.addService(service, depth: config.depth, clock: clock) }
        samples.requests = count * config.depth
        samples.loopAllocations = run.loopAllocations
        samples.allRequests = (count + warmup) * config.depth
        return samples
    }

    /// pread/pwrite of the same blocks on a loop thread pinned like the device's loop: per "doorbell",
    /// `depth` calls back to back, timed together.
    func floor(_ config: BlkConfig, image: String, count: Int, warmup: Int) throws -> BlkSamples {
        if config.woken {
            let all = try BlkWokenFloor.run(image: image, doorbells: warmup + count, driverCPU: options.pinVcpu, loopCPU: loopCPU)
            var samples = BlkSamples()
            for ticks in all.suffix(count) {
                let nanoseconds = clock.nanoseconds(ticks)
                samples.batch.append(nanoseconds)
                samples.perRequest.append(nanoseconds)
                samples.busyNanoseconds += nanoseconds
            }
            samples.requests = count
            return samples
        }
        let loop = try Loops.make("bench-floor-io", cpu: loopCPU)
        defer { loop.shutdown() }
        let ticks = Mutex<Result<[UInt64], BenchError>>(.success([]))
        let done = ThreadParker()
        let depth = config.depth, write = config.write
        let notification = config.notification
        loop.execute {
            let result = notification ? Self.timedNotifications(doorbells: warmup + count)
                : Self.timedCalls(image: image, write: write, depth: depth, doorbells: warmup + count)
            ticks.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        let all = try ticks.withLock { $0 }.get()
        var samples = BlkSamples()
        for batchTicks in all.suffix(count) {
            let batch = clock.nanoseconds(batchTicks)
            samples.batch.append(batch)
            samples.perRequest.append(batch / Double(depth))
            samples.busyNanoseconds += batch
        }
        samples.requests = count * depth
        return samples
    }

    /// Opens the image as VirtioBlock does (O_RDWR, no O_DIRECT) and times `doorbells` batches of `depth`
    /// 4 KiB calls; returns each batch's TSC ticks. The buffer holds the pattern, so writes change nothing.
    static func timedCalls(image: String, write: Bool, depth: Int, doorbells: Int) -> Result<[UInt64], BenchError> {
        let fd = open(image, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return .failure(BenchError("cannot open \(image): \(Errno.current)")) }
        defer { close(fd) }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 4096, slots * blockSize) == 0, let buffer = raw else {
            return .failure(BenchError("posix_memalign failed"))
        }
        defer { free(buffer) }
        for slot in 0..<slots { memset(buffer + slot * blockSize, Int32(patternByte(slot)), blockSize) }
        var ticks = [UInt64](repeating: 0, count: doorbells)
        var request = 0
        for index in 0..<doorbells {
            let start = ckvm_rdtsc()
            for _ in 0..<depth {
                let slot = request % slots
                request += 1
                let data = buffer + slot * blockSize, offset = off_t(slot * blockSize)
                let n = write ? pwrite(fd, data, blockSize, offset) : pread(fd, data, blockSize, offset)
                guard n == blockSize else { return .failure(BenchError("p\(write ? "write" : "read") returned \(n): \(Errno.current)")) }
            }
            ticks[index] = ckvm_rdtsc() &- start
        }
        return .success(ticks)
    }

    /// The system calls one doorbell costs the device loop whatever it serves, as the device makes them:
    /// `read(2)` of the doorbell eventfd (KVM's ioeventfd; here signalled by this thread, untimed) and an
    /// 8-byte `write(2)` to an interrupt eventfd (the irqfd; here one nobody waits on, so KVM's injection
    /// and the vCPU's wake-up are not in it: row 3's `last_completion_to_irqfd` leg has them). Per doorbell,
    /// the TSC ticks of the pair.
    static func timedNotifications(doorbells: Int) -> Result<[UInt64], BenchError> {
        let doorbell = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)), irq = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        defer {
            if doorbell >= 0 { close(doorbell) }
            if irq >= 0 { close(irq) }
        }
        guard doorbell >= 0, irq >= 0 else { return .failure(BenchError("eventfd: \(Errno.current)")) }
        var ticks = [UInt64](repeating: 0, count: doorbells)
        for index in 0..<doorbells {
            EventFD.signalRaw(doorbell)
            let start = ckvm_rdtsc()
            let value = EventFD.drainRaw(doorbell)
            EventFD.signalRaw(irq)
            ticks[index] = ckvm_rdtsc() &- start
            guard value == 1 else { return .failure(BenchError("the doorbell eventfd read \(value), expected 1")) }
            if index % 1024 == 1023 { _ = EventFD.drainRaw(irq) }  // untimed: KVM consumes the irqfd's count
        }
        return .success(ticks)
    }
}
