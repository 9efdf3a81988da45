// Row 2: the notify path — guest doorbell write → ioeventfd → device loop → actor → virtqueue → irqfd →
// guest interrupt — side by side with eventfd ping-pongs between two host threads placed the same way.
//
// The device is the null backend (VirtioRig.swift): a request costs no I/O, so the row times the transport.
// Every configuration runs once per round, interleaved (round r starts at configuration r), as in row 1.
import ActorVmm
import Boot
import Devices
import EpollLoop
import Glibc

struct NotifyConfig: Sendable, Equatable {
    enum Kind: String, Sendable {
        case selfIPI = "kvm"     // the guest's self-IPI: KVM's own cost, no VMM, no second thread
        case eventfd       // bare threads: the floor
        case eventLoop = "loop"  // B is an EventLoop fd handler
        case device = "path"     // the notify path through a virtio device
    }

    let kind: Kind
    let placement: ExitConfig.Placement

    var id: String { kind == .selfIPI ? "notify-kvm-self-ipi" : "notify-\(kind.rawValue)-\(placement.rawValue)" }
    var floorID: String { "notify-eventfd-\(placement.rawValue)" }

    var label: String {
        let place = placement.rawValue
        switch kind {
        case .selfIPI: return "guest self-IPI, KVM only, no VMM (KVM floor)"
        case .eventfd: return "eventfd ping-pong, bare threads, \(place) (floor)"
        case .eventLoop: return "eventfd ping-pong via EventLoop handler, \(place)"
        case .device: return "doorbell -> loop -> actor -> irqfd -> IRQ, \(place)"
        }
    }

    static func all(pinned: Bool, crossCore: Bool) -> [NotifyConfig] {
        let placements: [ExitConfig.Placement] = !pinned ? [.unpinned] : crossCore ? [.sameCore, .crossCore] : [.sameCore]
        return [NotifyConfig(kind: .selfIPI, placement: placements[0])] + placements.flatMap { placement in
            [Kind.eventfd, .eventLoop, .device].map { NotifyConfig(kind: $0, placement: placement) }
        }
    }
}

/// One run (one round) of one configuration, in nanoseconds.
struct NotifySamples {
    /// The round trip: floors, A's TSC before its write → after its read; the device, the guest's TSC before
    /// the doorbell write → the first instruction of the interrupt handler.
    var roundTrip: [Double] = []
    /// The responder's own time: floors, B awake → its write returned; the device, the loop saw the
    /// doorbell → the irqfd write returned.
    var responder: [Double] = []
    /// Floors: A's write → B awake (one way, TSCs of two CPUs). The device: doorbell seen → used ring updated.
    var partial: [Double] = []
    /// The device, when the guest's TSC offset is known: the round trip in three legs that add up to it —
    /// guest TSC before the doorbell → loop sees it; loop sees it → irqfd written (= `responder`); irqfd
    /// written → guest interrupt handler.
    var doorbellToLoop: [Double] = []
    var irqfdToGuest: [Double] = []
    /// Guest TSC − host TSC of the run's vCPU, if KVM told.
    var tscOffset: Int64?
}

struct NotifyBench {
    let guestPath: String
    let options: BenchOptions
    let clock: TscClock

    /// Where the guest stores its per-doorbell cycle counts (guest-physical; the VM has 128 MiB).
    static let sampleBuffer: UInt64 = 0x400_0000

    func run(progress: (String) -> Void) async -> [(NotifyConfig, Result<[NotifySamples], BenchError>)] {
        let configs = NotifyConfig.all(pinned: options.pinVcpu != nil, crossCore: options.crossCore)
        var results: [String: Result<[NotifySamples], BenchError>] = [:]
        let perRound = max(1, options.notifySamples / options.rounds)
        for round in 0..<options.rounds {
            for step in 0..<configs.count {
                let config = configs[(round + step) % configs.count]
                if case .failure = results[config.id] { continue }
                do {
                    let samples = try await runOnce(config, count: perRound)
                    results[config.id] = .success(((try? results[config.id]?.get()) ?? []) + [samples])
                    progress("notify round \(round + 1)/\(options.rounds): \(config.label): p50 "
                             + "\(micros(Summary(samples.roundTrip)?.p50 ?? 0)) us")
                } catch {
                    let failure = error as? BenchError ?? BenchError("\(error)")
                    results[config.id] = .failure(failure)
                    progress("notify: \(config.label): \(failure)")
                }
            }
        }
        return configs.map { ($0, results[$0.id] ?? .failure(BenchError("not run"))) }
    }

    /// The CPU of the device loop (or of B) for `placement`.
    func loopCPU(_ placement: ExitConfig.Placement) -> Int? {
        switch placement {
        case .sameCore: options.pinVcpu
        case .crossCore: options.pinLoop
        case .unpinned: nil
        }
    }

    func runOnce(_ config: NotifyConfig, count: Int) async throws -> NotifySamples {
        let warmup = options.notifyWarmup
        switch config.kind {
        case .eventfd, .eventLoop:
            let floor = try EventfdFloor.run(config.kind == .eventfd ? .bareThread : .eventLoop, vcpuCPU: options.pinVcpu,
                                             loopCPU: loopCPU(config.placement), count: count, warmup: warmup, clock: clock)
            return NotifySamples(roundTrip: floor.roundTrip, responder: floor.responder, partial: floor.oneWay)
        case .selfIPI:
            let run = try await VirtioGuestRun(guestPath: guestPath, check: "bench-ipi", parameters: "", backend: nil,
                                               count: count, warmup: warmup, requestsPerDoorbell: 1,
                                               vcpuCPU: options.pinVcpu, loopCPU: nil, sampleBuffer: Self.sampleBuffer).run()
            return NotifySamples(roundTrip: run.guestCycles.map(clock.nanoseconds))
        case .device:
            let run = try await VirtioGuestRun(guestPath: guestPath, check: "bench-notify", parameters: "", backend: .null,
                                               count: count, warmup: warmup, requestsPerDoorbell: 1,
                                               vcpuCPU: options.pinVcpu, loopCPU: loopCPU(config.placement),
                                               sampleBuffer: Self.sampleBuffer).run()
            var samples = NotifySamples(tscOffset: run.tscOffset)
            for (index, service) in run.services.enumerated() {
                let start = run.guestStarts[index], end = run.guestEnds[index]
                samples.roundTrip.append(clock.nanoseconds(end &- start))
                samples.responder.append(clock.nanoseconds(from: service.doorbell, to: service.interrupt))
                samples.partial.append(clock.nanoseconds(from: service.doorbell, to: service.completions[0]))
                if let hostStart = run.hostTicks(start), let hostEnd = run.hostTicks(end) {
                    samples.doorbellToLoop.append(clock.nanoseconds(from: hostStart, to: service.doorbell))
                    samples.irqfdToGuest.append(clock.nanoseconds(from: service.interrupt, to: hostEnd))
                }
            }
            return samples
        }
    }
}
