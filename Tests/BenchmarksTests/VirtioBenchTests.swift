@testable import ActorVmm
@testable import Benchmarks
@testable import Devices
import Testing

/// Rows 2 and 3 without KVM: splitting a device's recording into doorbells, the configurations, and how their
/// rows, targets and summary come out.
@Suite struct DoorbellGroupingTests {
    typealias Event = VirtioEventRecorder.Event

    func events(_ kinds: [VirtioEventRecorder.Kind]) -> [Event] {
        kinds.enumerated().map { Event(tsc: UInt64(100 * ($0.offset + 1)), kind: $0.element, queue: 0) }
    }

    @Test func eachDoorbellHasItsCompletionsAndInterrupt() throws {
        let recorded = events([.doorbell, .completed, .completed, .interrupt, .doorbell, .completed, .completed, .interrupt])
        let services = try DoorbellService.group(recorded, requests: 2)
        #expect(services == [DoorbellService(doorbell: 100, completions: [200, 300], interrupt: 400),
                             DoorbellService(doorbell: 500, completions: [600, 700], interrupt: 800)])
    }

    /// A doorbell's requests completed in two batches, one interrupt each: the service ends at the second.
    @Test func requestsCompletedInBatchesEndAtTheLastInterrupt() throws {
        let recorded = events([.doorbell, .completed, .interrupt, .completed, .interrupt, .doorbell, .completed, .completed, .interrupt])
        let services = try DoorbellService.group(recorded, requests: 2)
        #expect(services == [DoorbellService(doorbell: 100, completions: [200, 400], interrupt: 500),
                             DoorbellService(doorbell: 600, completions: [700, 800], interrupt: 900)])
    }

    @Test func anythingElseIsRefused() throws {
        let broken: [[VirtioEventRecorder.Kind]] = [
            [.doorbell, .completed, .interrupt],                        // one completion where two were posted
            [.doorbell, .interrupt, .completed, .completed],            // an interrupt before any completion
            [.completed, .completed, .interrupt],                       // no doorbell (the ring wrapped, or an MMIO notify)
            [.doorbell, .doorbell, .completed, .completed, .interrupt], // a doorbell before the interrupt
            [.interrupt],                                               // an interrupt of its own (config vector)
            [.doorbell, .completed, .completed],                        // the last one unfinished
        ]
        for kinds in broken {
            #expect(throws: BenchError.self) { try DoorbellService.group(events(kinds), requests: 2) }
        }
        #expect(try DoorbellService.group([], requests: 1).isEmpty)
    }
}

@Suite struct VirtioConfigTests {
    @Test func notifyRowsPerPinning() {
        let pinned = NotifyConfig.all(pinned: true, crossCore: true)
        #expect(pinned.count == 7 && Set(pinned.map(\.id)).count == 7)
        #expect(pinned.first?.id == "notify-kvm-self-ipi")
        #expect(pinned.contains { $0.id == "notify-path-cross-core" && $0.floorID == "notify-eventfd-cross-core" })
        #expect(NotifyConfig.all(pinned: false, crossCore: false).map(\.id)
                == ["notify-kvm-self-ipi", "notify-eventfd-unpinned", "notify-loop-unpinned", "notify-path-unpinned"])
    }

    @Test func blkRowsComeInPairsWithTheirFloors() {
        let all = BlkConfig.all
        #expect(all.count == 14 && Set(all.map(\.id)).count == 14)
        for config in all where !config.floor {
            #expect(all.contains { $0.floor && $0.id == config.floorID && $0.depth == config.depth && $0.write == config.write })
        }
        #expect(all.map(\.id).prefix(5)
                == ["blk-notification-qd1", "blk-woken-pread-qd1", "blk-pread-qd1", "blk-read-qd1", "blk-host-read-qd1"])
        // `--only blk-host` runs what needs no guest: the floors and the host-driver rows.
        #expect(all.filter { $0.floor || $0.host }.count == 10)
        #expect(all.filter(\.host).allSatisfy { $0.id.hasPrefix("blk-host-") && $0.floorID == "blk-p\($0.operation)-qd\($0.depth)" })
    }

    /// The notification floors are compared with pread at QD 1 (their `x p50` is "how many preads").
    @Test func notificationFloorsCompareWithPread() {
        for config in BlkConfig.all.prefix(2) {
            let row = Sections.blkRow(config, .success([BlkSamples(perRequest: [700], batch: [700], requests: 1)]))
            #expect(row.floorID == "blk-pread-qd1")
        }
        #expect(Sections.blkRow(BlkConfig(write: false, depth: 1, floor: true), .failure(BenchError("x"))).floorID == nil)
    }

    @Test func optionsForTheNewSections() throws {
        let options = try BenchOptions.parse(["--only", "notify,blk", "--notify-samples", "600", "--blk-batches", "40"], cpuCount: 2)
        #expect(options.sections == ["notify", "blk"])
        #expect(options.notifySamples == 600 && options.blkBatches == 40 && options.blkSamples == 10_000)
        let quick = try BenchOptions.parse(["--quick"], cpuCount: 2)
        #expect(quick.notifySamples < BenchOptions().notifySamples && quick.blkBatches < BenchOptions().blkBatches)
        #expect(throws: BenchError.self) { try BenchOptions.parse(["--blk-samples", "0"], cpuCount: 2) }
    }

    @Test func scratchImagePatternMatchesTheGuest() {
        // Tests/Guest/Sources/BenchVirtio.swift: block s holds the byte s + 1 (BenchBlk.pattern).
        #expect(BlkBench.patternByte(0) == 1 && BlkBench.patternByte(31) == 32)
    }
}

@Suite struct VirtioReportTests {
    func samples(_ value: Double, _ count: Int = 20) -> [Double] { (0..<count).map { value + Double($0) } }

    func report(pathRoundTrip: Double) -> BenchReport {
        var report = BenchReport(machine: MachineInfo(cpuModel: "Test CPU", cpuCount: 2, kernel: "Linux", kvmModules: ["kvm"],
                                                      hypervisorFlag: false),
                                 options: BenchOptions(), tscHertz: 2.5e9, startedAt: "T")
        var notify = Sections.notify(report.options)
        let floor = NotifyConfig(kind: .eventfd, placement: .crossCore)
        let path = NotifyConfig(kind: .device, placement: .crossCore)
        notify.latency = [
            Sections.notifyRow(floor, .success([NotifySamples(roundTrip: samples(10_000), responder: samples(1_000))])),
            Sections.notifyRow(path, .success([NotifySamples(roundTrip: samples(pathRoundTrip), responder: samples(2_000),
                                                             doorbellToLoop: samples(5_000), irqfdToGuest: samples(3_000))])),
        ]
        var blk = Sections.blk(report.options)
        let pread = BlkConfig(write: false, depth: 1, floor: true), read = BlkConfig(write: false, depth: 1, floor: false)
        blk.latency = [
            Sections.blkRow(pread, .success([BlkSamples(perRequest: samples(500), batch: samples(500), requests: 20,
                                                        busyNanoseconds: 10_000)])),
            Sections.blkRow(read, .failure(BenchError("guest check failed"))),
        ]
        report.sections = [notify, blk]
        report.compareWithFloors()
        report.targets = Sections.targets(report)
        report.summary = Sections.summary(report, files: "f")
        return report
    }

    @Test func notifyTargetPerPlacement() throws {
        let met = report(pathRoundTrip: 20_000)
        let check = try #require(met.targets.first { $0.name == "notify path / eventfd floor, cross-core p50" })
        #expect(check.measured.map { abs($0 - 20_009 / 10_009) < 1e-9 } == true)
        #expect(check.verdict == "met")
        #expect(met.summary.contains("notify path vs eventfd floor p50: cross-core 2.00x (target <= 2.5x: met)"))
        let missed = report(pathRoundTrip: 30_000)
        #expect(missed.targets.first { $0.name.hasPrefix("notify path") }?.verdict == "MISSED")
        #expect(missed.summary.contains("(target <= 2.5x: MISSED)"))
    }

    /// Issue 16's virtio-blk targets: ≤ 1.2× at QD 32, ≤ 2× at QD 1, per operation; n/a when a row is missing.
    @Test func blkTargetsPerDepthAndOperation() throws {
        var report = report(pathRoundTrip: 20_000)
        let floor = BlkConfig(write: false, depth: 32, floor: true), device = BlkConfig(write: false, depth: 32, floor: false)
        for perRequest in [550.0, 700.0] {
            var blk = Sections.blk(report.options)
            blk.latency = [Sections.blkRow(floor, .success([BlkSamples(perRequest: [500], batch: [16_000], requests: 32)])),
                           Sections.blkRow(device, .success([BlkSamples(perRequest: [perRequest], batch: [32 * perRequest], requests: 32)]))]
            report.sections = [blk]
            report.compareWithFloors()
            let checks = Sections.blkTargets(report)
            #expect(checks.map(\.name) == ["virtio-blk read QD 32 / pread, p50", "virtio-blk write QD 32 / pwrite, p50",
                                            "virtio-blk read QD 1 / pread, p50", "virtio-blk write QD 1 / pwrite, p50"])
            let read = try #require(checks.first)
            #expect(read.verdict == (perRequest == 550 ? "met" : "MISSED"))
            #expect(read.limit == 1.2 && checks[2].limit == 2.0)
            #expect(checks[1].verdict == "n/a" && checks[1].note == "not run")
        }
    }

    @Test func rowsCarryTheirOwnKeysAndColumns() {
        let report = report(pathRoundTrip: 20_000)
        let json = report.json.serialized()
        #expect(json.contains(#""round_trip":{"#) && json.contains(#""responder":{"#))
        #expect(json.contains(#""guest_doorbell_to_loop":{"#) && json.contains(#""irqfd_to_guest_interrupt":{"#))
        #expect(json.contains(#""per_request":{"#) && json.contains(#""requests_per_second":2000000"#))
        #expect(!json.contains(#""host":{"#))
        let text = TextTable.render(report)
        #expect(text.contains("loop p50") && text.contains("req/s") && !text.contains("exits/s"))
        #expect(text.contains("failed: guest check failed"))
        #expect(report.summary.contains("virtio-blk n/a"))
    }
}
