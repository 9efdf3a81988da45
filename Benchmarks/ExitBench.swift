// Row 1: PIO and MMIO exit round trips per hand-off strategy, side by side with the raw floor.
//
// Every configuration boots the test guest in-process with `tests=bench-pio` or `bench-mmio` and a
// fresh test device: `RawTestDevice` handled on the vCPU thread (the floor) or the `TestDevice` actor on
// its own loop. The configurations run in interleaved rounds (round r starts at configuration r), so
// background load on this shared host spreads over all of them instead of skewing one.
import ActorVmm
import Boot
import Devices
import EpollLoop
import Glibc

/// One row of the exit table: a transport and a way of handling the exit.
struct ExitConfig: Sendable, Equatable {
    enum Transport: String, Sendable { case pio, mmio }
    enum Handling: Sendable, Equatable {
        /// `RawTestDevice` on the vCPU thread, no actor: the floor.
        case raw
        /// The floor again, as a row of its own: an A/A check whose ratio to the floor (ideally 1.00x)
        /// shows how much noise this run's ratios carry.
        case rawAgain
        case actor(HandoffStrategy)
    }
    /// Where the device loop runs relative to the vCPU thread.
    enum Placement: String, Sendable { case sameCore = "same-core", crossCore = "cross-core", unpinned }

    let transport: Transport
    let handling: Handling
    let placement: Placement

    var id: String {
        switch handling {
        case .raw: "\(transport.rawValue)-raw"
        case .rawAgain: "\(transport.rawValue)-raw-again"
        case .actor(let strategy): "\(transport.rawValue)-\(strategy.rawValue)-\(placement.rawValue)"
        }
    }

    var floorID: String { "\(transport.rawValue)-raw" }

    var label: String {
        let name = transport == .pio ? "PIO" : "MMIO"
        switch handling {
        case .raw: return "\(name) raw inline, no actor (floor)"
        case .rawAgain: return "\(name) raw inline again (A/A noise check)"
        case .actor(.inlineIfIdle): return "\(name) actor inline-if-idle"
        case .actor(.enqueueAndWait): return "\(name) actor enqueue+wait, \(placement.rawValue)"
        case .actor(.task): return "\(name) actor Task, \(placement.rawValue)"
        }
    }

    /// The rows, per transport: floor, the floor again (A/A), inline-if-idle, then enqueue and Task on the
    /// vCPU's core and across cores (or unpinned, without pinning).
    static func all(pinned: Bool, crossCore: Bool) -> [ExitConfig] {
        let placements: [Placement] = !pinned ? [.unpinned] : crossCore ? [.sameCore, .crossCore] : [.sameCore]
        var configs: [ExitConfig] = []
        for transport in [Transport.pio, .mmio] {
            configs.append(ExitConfig(transport: transport, handling: .raw, placement: placements[0]))
            configs.append(ExitConfig(transport: transport, handling: .rawAgain, placement: placements[0]))
            configs.append(ExitConfig(transport: transport, handling: .actor(.inlineIfIdle),
                                      placement: placements[placements.count - 1]))
            for strategy in [HandoffStrategy.enqueueAndWait, .task] {
                for placement in placements {
                    configs.append(ExitConfig(transport: transport, handling: .actor(strategy), placement: placement))
                }
            }
        }
        return configs
    }
}

/// The samples of one run (one round) of one configuration, in nanoseconds.
struct ExitSamples {
    var host: [Double] = []         // KVM_RUN return → next KVM_RUN return, per exit
    var hostWrites: [Double] = []
    var hostReads: [Double] = []
    var handler: [Double] = []      // KVM_RUN return → exit handled (the VMM's own time)
    var guest: [Double] = []        // rdtsc around the access, in the guest
    var guestWrites: [Double] = []
    var guestReads: [Double] = []
    var hostWhileGuestTimes: [Double] = []  // host view of pass 2 (the guest's rdtsc and stores included)
    var guestToHostTsc: Double?     // guest cycles / host cycles over pass 2 (the share of it inside accesses)
}

/// Runs the exit benchmark.
struct ExitBench {
    let guestPath: String
    let options: BenchOptions
    let clock: TscClock

    /// Where the guest stores its per-access cycle counts (guest-physical; the VM has 128 MiB).
    static let sampleBuffer: UInt64 = 0x400_0000
    static let magicOffset: UInt64 = 0x8

    /// Runs every configuration once per round; returns each configuration's rounds.
    func run(progress: (String) -> Void) async -> [(ExitConfig, Result<[ExitSamples], BenchError>)] {
        let configs = ExitConfig.all(pinned: options.pinVcpu != nil, crossCore: options.crossCore)
        var results: [String: Result<[ExitSamples], BenchError>] = [:]
        let perRound = max(1, options.exitRoundTrips / options.rounds)
        for round in 0..<options.rounds {
            for step in 0..<configs.count {
                let config = configs[(round + step) % configs.count]
                if case .failure = results[config.id] { continue }
                do {
                    let samples = try await runOnce(config, roundTrips: perRound)
                    results[config.id] = .success(((try? results[config.id]?.get()) ?? []) + [samples])
                    progress("exit round \(round + 1)/\(options.rounds): \(config.label): p50 "
                             + "\(micros(Summary(samples.host)?.p50 ?? 0)) us")
                } catch {
                    let failure = error as? BenchError ?? BenchError("\(error)")
                    results[config.id] = .failure(failure)
                    progress("exit: \(config.label): \(failure)")
                }
            }
        }
        return configs.map { ($0, results[$0.id] ?? .failure(BenchError("not run"))) }
    }

    /// Boots the test guest once with `config` and returns its samples.
    func runOnce(_ config: ExitConfig, roundTrips: Int) async throws -> ExitSamples {
        let warmup = options.exitWarmup
        let memory = try benchMemory(mebibytes: 128)
        let check = "bench-\(config.transport.rawValue)"
        let cmdline = "tests=\(check) bench_n=\(roundTrips) bench_warmup=\(warmup) bench_buf=\(hex(Self.sampleBuffer))"
        let boot = try KernelLoader.loadElfKernel(path: guestPath, cmdline: cmdline, memory: memory)

        let vcpuCPU = options.pinVcpu
        let loopCPU: Int? = switch config.placement {
        case .sameCore: options.pinVcpu
        case .crossCore: options.pinLoop
        case .unpinned: nil
        }
        let deviceLoop = try Loops.make("bench-device", cpu: loopCPU)
        defer { deviceLoop.shutdown() }
        let target: BusTarget
        let strategy: HandoffStrategy
        switch config.handling {
        case .raw, .rawAgain:
            target = .raw(RawTestDevice())
            strategy = .inlineIfIdle  // only the UART and power register use it
        case .actor(let chosen):
            target = .device(TestDevice(loop: deviceLoop))
            strategy = chosen
        }
        let recorder = ExitRecorder(capacity: 2 * (2 * roundTrips + warmup) + 4096)
        let vm = try await BenchVm(memory: memory, bootStates: [boot.bootState], strategy: strategy,
                                   threadOptions: [VcpuThreadOptions(cpu: vcpuCPU, recorder: recorder)]) { devices in
            try devices.attachPlatformDevice(id: "test-device", pio: [(TestDevice.port, TestDevice.portSize)],
                                             mmio: [(Layout.testDeviceMmio, TestDevice.mmioSize)], target)
        }
        try await vm.start()
        let reason = vm.waitForStop(timeout: 30 + Double(2 * roundTrips + warmup) * 0.002)
        await vm.tearDown()

        let output = vm.serial.text
        guard reason == .poweredOff else { throw BenchError("guest did not finish: \(reason)") }
        guard output.contains("TEST \(check) PASS") else {
            let line = output.split(separator: "\n").first { $0.hasPrefix("TEST \(check)") } ?? "no result line"
            throw BenchError("guest check failed: \(line)")
        }
        return try extract(config, recorder: recorder.samples(), memory: memory, roundTrips: roundTrips)
    }

    /// Picks the measured exits out of the recording and reads the guest's own cycle counts out of its
    /// memory. The last three magic-register reads are the guest's markers A, B, C (see the guest's
    /// Bench.swift): pass 1, the lean loop timed by the host, lies between A and B; pass 2, timed by the
    /// guest with rdtsc around every access, between B and C.
    func extract(_ config: ExitConfig, recorder samples: [ExitRecorder.Sample], memory: GuestMemory,
                 roundTrips: Int) throws -> ExitSamples {
        let base = config.transport == .pio ? TestDevice.port : Layout.testDeviceMmio
        let marker = ExitKey(kind: config.transport == .pio ? .pio : .mmio, isWrite: false,
                             address: base + Self.magicOffset)
        let markers = samples.indices.filter { samples[$0].key == marker }
        guard markers.count >= 3 else { throw BenchError("pass markers not found among \(samples.count) exits") }
        let a = markers[markers.count - 3], b = markers[markers.count - 2], c = markers[markers.count - 1]
        guard b - a - 1 == 2 * roundTrips, c - b - 1 == 2 * roundTrips else {
            throw BenchError("expected \(2 * roundTrips) exits per pass, found \(b - a - 1) and \(c - b - 1)")
        }
        var result = ExitSamples()
        for index in (a + 1)..<b {
            let sample = samples[index]
            let roundTrip = clock.nanoseconds(samples[index + 1].exitTSC &- sample.exitTSC)
            result.host.append(roundTrip)
            if sample.key.isWrite { result.hostWrites.append(roundTrip) } else { result.hostReads.append(roundTrip) }
            result.handler.append(clock.nanoseconds(sample.doneTSC &- sample.exitTSC))
        }
        for index in (b + 1)..<c {
            result.hostWhileGuestTimes.append(clock.nanoseconds(samples[index + 1].exitTSC &- samples[index].exitTSC))
        }

        let bytes = try memory.readBytes(at: GuestAddress(Self.sampleBuffer), count: 8 * roundTrips)
        var guestCycles: UInt64 = 0
        for index in 0..<(2 * roundTrips) {
            let offset = 4 * index
            let cycles = UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
                | UInt32(bytes[offset + 3]) << 24
            guestCycles += UInt64(cycles)
            let ns = clock.nanoseconds(UInt64(cycles))
            result.guest.append(ns)
            if index % 2 == 0 { result.guestWrites.append(ns) } else { result.guestReads.append(ns) }
        }
        let hostCycles = samples[c].exitTSC &- samples[b].exitTSC
        if hostCycles > 0 { result.guestToHostTsc = Double(guestCycles) / Double(hostCycles) }
        return result
    }
}
