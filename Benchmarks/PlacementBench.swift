// Row 4: placement. N busy test devices (N = 1, 2, 4), each hammered by its own vCPU, with the device
// actors on one shared loop (Firecracker-like) or on one loop each (Cloud-Hypervisor-like), against the
// raw floor with the same number of vCPUs. Exits use the default hand-off (inline-if-idle), so a shared
// loop shows up as claim contention: a vCPU that finds the loop owned by another falls back to
// enqueue-and-wait.
//
// The guest here is not the test guest (which runs on one vCPU): each vCPU runs a six-instruction loop
// written straight into guest memory, `mov dx, port; xor eax, eax; 1: out dx, eax; in eax, dx;
// inc eax; jmp 1b`, for a fixed time. Threads are not pinned: 4 vCPUs on this 2-CPU host are
// oversubscribed on purpose ("busy"), and the scheduler places vCPUs and loops.
import ActorVmm
import Boot
import CKvm
import Devices
import EpollLoop
import Glibc

struct PlacementConfig: Sendable, Equatable {
    enum Mode: String, Sendable {
        case raw
        case shared = "shared-loop"
        case perDevice = "loop-per-device"
    }

    let mode: Mode
    let devices: Int

    var id: String { "placement-\(mode.rawValue)-\(devices)" }
    var floorID: String { "placement-raw-\(devices)" }

    var label: String {
        let count = devices == 1 ? "1 device" : "\(devices) devices"
        switch mode {
        case .raw: return "raw inline, \(count) (floor)"
        case .shared: return "actors on one shared loop, \(count)"
        case .perDevice: return "actors on one loop each, \(count)"
        }
    }

    static let all: [PlacementConfig] = [1, 2, 4].flatMap { devices in
        [Mode.raw, .shared, .perDevice].map { PlacementConfig(mode: $0, devices: devices) }
    }
}

/// The samples of one run (one round) of one configuration; times in nanoseconds.
struct PlacementSamples {
    var host: [Double] = []
    var handler: [Double] = []
    var exitsPerSecond: Double = 0
    /// Share of exits that found their device's loop busy and went through it (0...1).
    var slowPathShare: Double = 0
}

struct PlacementBench {
    let options: BenchOptions
    let clock: TscClock

    static let codeBase: UInt64 = 0x20_0000
    static let portBase: UInt64 = 0x0B00

    /// Runs every configuration once per round; returns each configuration's rounds.
    func run(progress: (String) -> Void) async -> [(PlacementConfig, Result<[PlacementSamples], BenchError>)] {
        let configs = PlacementConfig.all
        var results: [String: Result<[PlacementSamples], BenchError>] = [:]
        for round in 0..<options.placementRounds {
            for step in 0..<configs.count {
                let config = configs[(round + step) % configs.count]
                if case .failure = results[config.id] { continue }
                do {
                    let samples = try await runOnce(config)
                    results[config.id] = .success(((try? results[config.id]?.get()) ?? []) + [samples])
                    progress("placement round \(round + 1)/\(options.placementRounds): \(config.label): "
                             + "p50 \(micros(Summary(samples.host)?.p50 ?? 0)) us, \(fixed(samples.exitsPerSecond, 0)) exits/s")
                } catch {
                    let failure = error as? BenchError ?? BenchError("\(error)")
                    results[config.id] = .failure(failure)
                    progress("placement: \(config.label): \(failure)")
                }
            }
        }
        return configs.map { ($0, results[$0.id] ?? .failure(BenchError("not run"))) }
    }

    /// The vCPU loop for device `index` (see the file comment), at `codeBase + 64 * index`.
    static func guestCode(port: UInt16) -> [UInt8] {
        [0x66, 0xBA, UInt8(port & 0xFF), UInt8(port >> 8),  // mov dx, port
         0x31, 0xC0,                                        // xor eax, eax
         0xEF,                                              // 1: out dx, eax
         0xED,                                              //    in eax, dx
         0xFF, 0xC0,                                        //    inc eax
         0xEB, 0xFA]                                        //    jmp 1b
    }

    func runOnce(_ config: PlacementConfig) async throws -> PlacementSamples {
        let memory = try benchMemory(mebibytes: 16)
        try LongMode.writeStructures(to: memory)
        var loops: [EventLoop] = []
        defer { for loop in loops { loop.shutdown() } }
        switch config.mode {
        case .raw: break
        case .shared: loops = [try Loops.make("bench-shared", cpu: nil)]
        case .perDevice: loops = try (0..<config.devices).map { try Loops.make("bench-dev\($0)", cpu: nil) }
        }
        var targets: [(id: String, port: UInt64, target: BusTarget)] = []
        var bootStates: [VcpuBootState] = []
        var recorders: [ExitRecorder] = []
        for index in 0..<config.devices {
            let port = Self.portBase + 0x10 * UInt64(index)
            let entry = Self.codeBase + 64 * UInt64(index)
            try memory.write(bytes: Self.guestCode(port: UInt16(port)), at: GuestAddress(entry))
            bootStates.append(LongMode.bootState(entry: entry))
            let target: BusTarget = config.mode == .raw
                ? .raw(RawTestDevice()) : .device(TestDevice(loop: loops[index % loops.count]))
            targets.append(("test-device\(index)", port, target))
            recorders.append(ExitRecorder(capacity: 1 << 18))
        }
        let vm = try await BenchVm(memory: memory, bootStates: bootStates, strategy: .inlineIfIdle,
                                   threadOptions: recorders.map { VcpuThreadOptions(recorder: $0) }) { devices in
            for device in targets {
                try devices.attachPlatformDevice(id: device.id, pio: [(device.port, TestDevice.portSize)], device.target)
            }
        }
        try await vm.start()
        usleep(UInt32(options.placementWarmup * 1e6))
        let tsc0 = ckvm_rdtsc()
        let counts0 = vm.manager.exitCounts(), slow0 = vm.manager.slowPathCounts()
        usleep(UInt32(options.placementDuration * 1e6))
        let counts1 = vm.manager.exitCounts(), slow1 = vm.manager.slowPathCounts()
        let tsc1 = ckvm_rdtsc()
        let early = vm.stopLatch.stopReason
        await vm.tearDown()
        if let early { throw BenchError("the VM stopped early: \(early)") }

        var result = PlacementSamples()
        for recorder in recorders {
            let samples = recorder.samples()
            guard samples.count > 1 else { continue }
            for index in 0..<(samples.count - 1) where samples[index].exitTSC >= tsc0 && samples[index + 1].exitTSC <= tsc1 {
                result.host.append(clock.nanoseconds(samples[index + 1].exitTSC &- samples[index].exitTSC))
                result.handler.append(clock.nanoseconds(samples[index].doneTSC &- samples[index].exitTSC))
            }
        }
        guard !result.host.isEmpty else { throw BenchError("no exits recorded") }
        let exits = zip(counts1, counts0).reduce(0) { $0 + $1.0 - $1.1 }
        result.exitsPerSecond = Double(exits) / (clock.nanoseconds(tsc1 &- tsc0) / 1e9)
        let slow = zip(slow1, slow0).reduce(0) { $0 + $1.0 - $1.1 }
        result.slowPathShare = exits > 0 ? Double(slow) / Double(exits) : 0
        return result
    }
}
