// The report's sections: titles and methods, rows built from measurements, the rows that cannot be
// measured yet, the issue's targets, and the summary line.
import ActorVmm

enum Sections {
    // MARK: 1. Exit round trips

    static func exit(_ options: BenchOptions) -> Section {
        Section(id: "exit", title: "1. Exit round trip per hand-off strategy (test guest, 1 vCPU)",
                method: "host: KVM_RUN return to next KVM_RUN return (TSC) per exit, guest in a lean write/read loop; "
                    + "vmm: KVM_RUN return to exit handled; guest: rdtsc around each OUT/IN or MMIO write/read (a "
                    + "second pass). \(options.exitRoundTrips) write+read round trips per row and view, in "
                    + "\(options.rounds) interleaved rounds, \(options.exitWarmup) warm-up round trips per guest run. "
                    + "p10-p99: median over rounds of each round's percentile; n, max: all samples.",
                kind: .latency)
    }

    static func exitRow(_ config: ExitConfig, _ result: Result<[ExitSamples], BenchError>) -> LatencyRow {
        var row = LatencyRow(id: config.id, label: config.label, floorID: config.handling == .raw ? nil : config.floorID)
        let strategy = switch config.handling {
        case .raw, .rawAgain: "raw"
        case .actor(let strategy): strategy.rawValue
        }
        let onVcpu = config.handling == .raw || config.handling == .rawAgain
        row.attributes = [("transport", config.transport.rawValue), ("strategy", strategy),
                          ("placement", onVcpu ? "vcpu-thread" : config.placement.rawValue)]
        switch result {
        case .failure(let error):
            row.unavailable = "failed: \(error)"
        case .success(let rounds):
            row.main = Summary(rounds: rounds.map(\.host))
            row.handler = Summary(rounds: rounds.map(\.handler))
            row.guest = Summary(rounds: rounds.map(\.guest))
            let details: [(String, (ExitSamples) -> [Double])] = [
                ("host_writes", \.hostWrites), ("host_reads", \.hostReads), ("guest_writes", \.guestWrites),
                ("guest_reads", \.guestReads), ("host_during_guest_timing", \.hostWhileGuestTimes),
            ]
            row.details = details.compactMap { key, values in Summary(rounds: rounds.map(values)).map { (key, $0) } }
            if let pooled = Summary(rounds.flatMap(\.host)) { row.details.append(("host_pooled", pooled)) }
            row.roundP50s = rounds.compactMap { Summary($0.host)?.p50 }
            if let check = medianValue(rounds.compactMap(\.guestToHostTsc)) {
                row.attributes.append(("guest_cycles_per_host_cycle", fixed(check, 4)))
            }
        }
        return row
    }

    // MARK: 4. Placement

    static func placement(_ options: BenchOptions) -> Section {
        Section(id: "placement", title: "4. Placement: one shared loop vs one loop per device (busy test devices)",
                method: "N vCPUs each hammer their own test device (OUT+IN loop) for \(fixed(options.placementDuration, 1)) s "
                    + "x \(options.placementRounds) round(s), inline-if-idle hand-off, threads unpinned; "
                    + "per exit KVM_RUN return to next KVM_RUN return (percentiles: median over rounds); exits/s "
                    + "summed over vCPUs; via loop = share of exits that found the device's loop busy and went through it.",
                kind: .latency)
    }

    static func placementRow(_ config: PlacementConfig, _ result: Result<[PlacementSamples], BenchError>) -> LatencyRow {
        var row = LatencyRow(id: config.id, label: config.label, floorID: config.mode == .raw ? nil : config.floorID)
        row.attributes = [("mode", config.mode.rawValue), ("devices", String(config.devices))]
        switch result {
        case .failure(let error):
            row.unavailable = "failed: \(error)"
        case .success(let rounds):
            row.main = Summary(rounds: rounds.map(\.host))
            row.handler = Summary(rounds: rounds.map(\.handler))
            if let pooled = Summary(rounds.flatMap(\.host)) { row.details.append(("host_pooled", pooled)) }
            row.roundP50s = rounds.compactMap { Summary($0.host)?.p50 }
            row.rate = medianValue(rounds.map(\.exitsPerSecond))
            if config.mode != .raw { row.slowPathShare = medianValue(rounds.map(\.slowPathShare)) }
        }
        return row
    }

    // MARK: 5. Start and memory

    static func start(_ options: BenchOptions) -> Section {
        Section(id: "start", title: "5. VMM start and memory (actor-vmm release binary, 1 vCPU, 128 MiB)",
                method: "a tiny guest whose 3rd instruction writes 'S' to COM1: wall and CPU (all threads, process "
                    + "CPU clock) from posix_spawn to that byte on stdout; memory with the process stopped "
                    + "(SIGSTOP) after 10,000 round trips through the actor hand-off: overhead = VmRSS - Rss of "
                    + "the guest-RAM mapping. Floor: a Swift hello world linked as actor-vmm (static executable), same method, alternating. "
                    + "\(options.startRuns) processes each.",
                kind: .metrics)
    }

    static func startRows(_ result: Result<StartResults, BenchError>) -> [MetricRow] {
        let mib = 1.0 / 1024
        typealias Vmm = (StartSample) -> Double
        typealias Floor = (FloorSample) -> Double
        // id, label, unit, target, floor id, value for actor-vmm or for the floor
        let specs: [(String, String, String, Double?, String?, Vmm?, Floor?)] = [
            ("hello-wall", "hello world (linked as actor-vmm): start to output, wall", "ms", nil, nil, nil, { $0.wallMilliseconds }),
            ("start-wall", "actor-vmm: start to first guest instruction, wall", "ms", nil, "hello-wall", { $0.wallMilliseconds }, nil),
            ("hello-cpu", "hello world (linked as actor-vmm): start to output, CPU", "ms", nil, nil, nil, { $0.cpuMilliseconds }),
            ("start-cpu", "actor-vmm: start to first guest instruction, CPU", "ms", 5, "hello-cpu", { $0.cpuMilliseconds }, nil),
            ("hello-rss", "hello world (linked as actor-vmm): VmRSS", "MiB", nil, nil, nil, { Double($0.memory.vmRSS) * mib }),
            ("rss-at-start", "actor-vmm: VmRSS at first guest instruction", "MiB", nil, "hello-rss", { Double($0.atStart.vmRSS) * mib }, nil),
            ("rss-steady", "actor-vmm: VmRSS after 10,000 round trips", "MiB", nil, "hello-rss", { Double($0.steady.vmRSS) * mib }, nil),
            ("guest-steady", "  guest RAM touched (Rss of its mapping)", "MiB", nil, nil, { Double($0.steady.guestRSS) * mib }, nil),
            ("overhead-steady", "  RSS overhead (VmRSS - guest RAM)", "MiB", 5, "hello-rss", { Double($0.steady.overhead) * mib }, nil),
            ("overhead-file", "    file-backed (code of actor-vmm + libs)", "MiB", nil, nil, { Double($0.steady.rssFile) * mib }, nil),
            ("overhead-anon", "    anonymous (heap, stacks, data)", "MiB", nil, nil, { Double($0.steady.anonymousOverhead) * mib }, nil),
            ("hello-file", "hello world: file-backed", "MiB", nil, nil, nil, { Double($0.memory.rssFile) * mib }),
            ("hello-anon", "hello world: anonymous", "MiB", nil, nil, nil, { Double($0.memory.rssAnon) * mib }),
        ]
        var rows = specs.map { id, label, unit, target, floor, vmm, hello in
            var row = MetricRow(id: id, label: label, unit: unit, target: target)
            row.floorID = floor
            switch result {
            case .success(let results):
                if let vmm { row.values = results.vmm.map(vmm) }
                if let hello {
                    row.values = results.floor.map(hello)
                    if let error = results.floorError { row.unavailable = "failed: \(error)" }
                    else if results.floor.isEmpty { row.unavailable = "n/a (the floor program could not be built)" }
                }
            case .failure(let error):
                row.unavailable = error.description.hasPrefix("not run") ? error.description : "failed: \(error)"
            }
            return row
        }
        // KVM's own part of a start (KvmStartFloor), after the CPU row it explains.
        var kvm = MetricRow(id: "kvm-start-cpu", label: "  KVM's part: create VM + RAM + vCPU, run to 1st exit, CPU",
                            unit: "ms", target: nil)
        switch result {
        case .success(let results):
            kvm.values = results.kvmFloor
            if results.kvmFloor.isEmpty { kvm.unavailable = "n/a (no /dev/kvm)" }
        case .failure(let error): kvm.unavailable = "failed: \(error)"
        }
        rows.insert(kvm, at: (rows.firstIndex { $0.id == "start-cpu" } ?? rows.count - 1) + 1)
        return rows
    }

    // MARK: Targets and summary

    /// The issue's targets, checked against this run.
    static func targets(_ report: BenchReport) -> [TargetCheck] {
        var checks: [TargetCheck] = []
        for transport in ["pio", "mmio"] {
            let row = report.sections.first { $0.id == "exit" }?.latency.first { $0.id.hasPrefix("\(transport)-inline-") }
            let name = transport.uppercased()
            checks.append(TargetCheck(name: "\(name) inline-if-idle / raw, p50", measured: row?.ratioP50, limit: 1.10, unit: "x"))
            checks.append(TargetCheck(name: "\(name) inline-if-idle / raw, p99", measured: row?.ratioP99, limit: 1.5, unit: "x"))
        }
        checks += notifyTargets(report)
        checks += blkTargets(report)
        checks.append(TargetCheck(name: "VMM start, CPU", measured: report.metric("start-cpu")?.median, limit: 5, unit: " ms"))
        checks.append(TargetCheck(name: "RSS overhead", measured: report.metric("overhead-steady")?.median, limit: 5, unit: " MiB"))
        return checks
    }

    /// The last line of the output: the exit hand-off ratios first.
    static func summary(_ report: BenchReport, files: String) -> String {
        func ratios(_ transport: String) -> String {
            guard let row = report.row("\(transport)-inline-cross-core") ?? report.row("\(transport)-inline-same-core")
                    ?? report.row("\(transport)-inline-unpinned"), row.main != nil else { return "\(transport.uppercased()) n/a" }
            return "\(transport.uppercased()) p50 \(times(row.ratioP50)) p99 \(times(row.ratioP99))"
        }
        let exitTargets = report.targets.filter { $0.name.contains("inline-if-idle") }
        let exitVerdict = exitTargets.contains { $0.met == false } ? "MISSED"
            : exitTargets.allSatisfy { $0.met == true } ? "met" : "n/a"
        var parts = ["exit hand-off inline-if-idle vs raw inline: \(ratios("pio")), \(ratios("mmio")) "
                     + "(target p50 <= 1.10x, p99 <= 1.5x: \(exitVerdict))"]
        if let pio = report.row("pio-raw-again"), let mmio = report.row("mmio-raw-again"), pio.main != nil, mmio.main != nil {
            parts.append("A/A noise (raw vs raw) p50 \(times(pio.ratioP50))/\(times(mmio.ratioP50)) "
                         + "p99 \(times(pio.ratioP99))/\(times(mmio.ratioP99))")
        }
        if let same = report.row("pio-enqueue-same-core")?.ratioP50,
           let cross = report.row("pio-enqueue-cross-core")?.ratioP50 {
            parts.append("enqueue+wait same-core \(times(same)), cross-core \(times(cross))")
        }
        if let cpu = report.metric("start-cpu")?.median, let overhead = report.metric("overhead-steady")?.median {
            parts.append("start \(fixed(cpu, 2)) CPU ms, RSS overhead \(fixed(overhead, 2)) MiB")
        }
        parts.append(notifySummary(report))
        parts.append(blkSummary(report))
        if let snapshot = snapshotSummary(report) { parts.append(snapshot) }
        return "summary: " + parts.joined(separator: "; ") + "; " + files
    }
}
