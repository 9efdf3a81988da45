// Sections 2 (notify path) and 3 (virtio-blk service time): titles and methods, rows built from the
// measurements, the notify target, and their part of the summary line.

extension Sections {
    // MARK: 2. Notify path

    static func notify(_ options: BenchOptions) -> Section {
        Section(id: "notify", title: "2. Notify path (doorbell -> ioeventfd -> loop -> actor -> irqfd -> guest interrupt)",
                method: "round trip. path: the test guest's rdtsc just before its doorbell write to the rdtsc that is "
                    + "the first instruction of the queue's interrupt handler (the guest halts in between; guest TSC = host "
                    + "TSC rate); device: a null virtio device (no I/O). floors: host thread A (placed like the vCPU) "
                    + "rdtsc, write eventfd X, block in read on eventfd Y, rdtsc; B (placed like the device loop), a bare "
                    + "thread in epoll_wait or an EventLoop fd handler, reads X and writes Y. KVM floor: the same guest "
                    + "window around a self-IPI (in-kernel LAPIC, no VMM). loop = the responder's own time: B from wake-up "
                    + "to its write returned; the device loop from seeing the doorbell to its irqfd write returned. "
                    + "\(options.notifySamples) round trips per row in \(options.rounds) interleaved rounds "
                    + "(+\(options.notifyWarmup) warm-up per run); p10-p99: median over rounds.",
                kind: .latency, handlerHeader: "loop p50")
    }

    static func notifyRow(_ config: NotifyConfig, _ result: Result<[NotifySamples], BenchError>) -> LatencyRow {
        let isFloor = config.kind == .eventfd || config.kind == .selfIPI
        var row = LatencyRow(id: config.id, label: config.label, floorID: isFloor ? nil : config.floorID)
        row.mainKey = "round_trip"
        row.handlerKey = "responder"
        let path = switch config.kind {
        case .selfIPI: "guest self-IPI (in-kernel LAPIC)"
        case .eventfd: "eventfd, bare thread"
        case .eventLoop: "eventfd, EventLoop"
        case .device: "virtio (null device)"
        }
        row.attributes = [("path", path), ("placement", config.kind == .selfIPI ? "vcpu-thread" : config.placement.rawValue)]
        switch result {
        case .failure(let error):
            row.unavailable = "failed: \(error)"
        case .success(let rounds):
            row.main = Summary(rounds: rounds.map(\.roundTrip))
            row.handler = Summary(rounds: rounds.map(\.responder))
            let partialKey = config.kind == .device ? "doorbell_to_used_ring" : "one_way_write_to_wakeup"
            if let partial = Summary(rounds: rounds.map(\.partial)) { row.details.append((partialKey, partial)) }
            if let leg = Summary(rounds: rounds.map(\.doorbellToLoop)) { row.details.append(("guest_doorbell_to_loop", leg)) }
            if let leg = Summary(rounds: rounds.map(\.irqfdToGuest)) { row.details.append(("irqfd_to_guest_interrupt", leg)) }
            if let pooled = Summary(rounds.flatMap(\.roundTrip)) { row.details.append(("round_trip_pooled", pooled)) }
            row.roundP50s = rounds.compactMap { Summary($0.roundTrip)?.p50 }
            let offsets = Set(rounds.compactMap(\.tscOffset))
            if !offsets.isEmpty { row.attributes.append(("guest_tsc_offsets", offsets.sorted().map(String.init).joined(separator: ","))) }
        }
        return row
    }

    /// One check per placement: the path's p50 round trip over the bare eventfd floor's.
    static func notifyTargets(_ report: BenchReport) -> [TargetCheck] {
        let rows = report.sections.first { $0.id == "notify" }?.latency.filter { $0.id.hasPrefix("notify-path-") } ?? []
        guard !rows.isEmpty else {
            return [TargetCheck(name: "notify path / eventfd floor, p50", measured: nil, limit: 2.5, unit: "x", note: "not run")]
        }
        return rows.map { row in
            let placement = String(row.id.dropFirst("notify-path-".count))
            return TargetCheck(name: "notify path / eventfd floor, \(placement) p50", measured: row.ratioP50, limit: 2.5, unit: "x",
                               note: row.unavailable)
        }
    }

    static func notifySummary(_ report: BenchReport) -> String {
        let rows = report.sections.first { $0.id == "notify" }?.latency.filter { $0.id.hasPrefix("notify-path-") } ?? []
        let measured = rows.filter { $0.ratioP50 != nil }
        guard !measured.isEmpty else { return "notify path n/a" }
        let parts = measured.map { "\($0.id.dropFirst("notify-path-".count)) \(times($0.ratioP50))" }
        let verdict = measured.contains { ($0.ratioP50 ?? 0) > 2.5 } ? "MISSED" : "met"
        return "notify path vs eventfd floor p50: \(parts.joined(separator: ", ")) (target <= 2.5x: \(verdict))"
    }

    // MARK: 3. virtio-blk

    static func blk(_ options: BenchOptions) -> Section {
        Section(id: "blk", title: "3. virtio-blk request service time (notify -> used ring + interrupt)",
                method: "per request, host TSC on the device loop: loop sees the doorbell -> requests served by the real "
                    + "VirtioBlock -> used ring updated -> irqfd written, divided by the requests in the batch (QD 1: one; "
                    + "QD 32: the guest publishes 32 and rings once). floors: pread/pwrite of the same 4 KiB blocks of the "
                    + "same file (page cache), QD 32 = 32 calls back to back, on a loop thread pinned like the device loop. n = doorbells "
                    + "(batches); used = the same up to the last used-ring update, without the interrupt (ns); guest = its "
                    + "rdtsc from the doorbell write to the interrupt handler / QD; req/s = requests per second of the "
                    + "loop's busy time. \(options.blkSamples) QD 1 requests and \(options.blkBatches) "
                    + "QD 32 batches per row, \(options.rounds) interleaved rounds; p10-p99: median over rounds.",
                kind: .latency, handlerHeader: "used p50", rateHeader: "req/s")
    }

    static func blkRow(_ config: BlkConfig, _ result: Result<[BlkSamples], BenchError>) -> LatencyRow {
        let floorID = config.notification || config.woken ? "blk-pread-qd1" : config.floor ? nil : config.floorID
        var row = LatencyRow(id: config.id, label: config.label, floorID: floorID)
        row.mainKey = "per_request"
        row.handlerKey = "per_request_to_used_ring"
        row.rateKey = "requests_per_second"
        row.attributes = [("operation", config.operation), ("queue_depth", String(config.depth)),
                          ("path", config.notification ? "eventfd read + eventfd write on the loop thread"
                              : config.woken ? "EventLoop handler: eventfd read + pread + eventfd write"
                              : config.floor ? "p\(config.operation) on the loop thread"
                              : config.host ? "virtio-blk, host-thread driver, no KVM" : "virtio-blk")]
        switch result {
        case .failure(let error):
            row.unavailable = "failed: \(error)"
        case .success(let rounds):
            row.main = Summary(rounds: rounds.map(\.perRequest))
            if !config.floor {
                if !config.host { row.guest = Summary(rounds: rounds.map(\.guestPerRequest)) }
                row.handler = Summary(rounds: rounds.map(\.perRequestToUsed))
            }
            if config.depth > 1, let batch = Summary(rounds: rounds.map(\.batch)) { row.details.append(("batch", batch)) }
            let legs: [(String, (BlkSamples) -> [Double])] = [
                ("doorbell_to_first_completion", \.firstCompletion), ("between_completions", \.betweenCompletions),
                ("last_completion_to_irqfd", \.lastCompletionToIrqfd),
            ]
            for (key, leg) in legs { if let summary = Summary(rounds: rounds.map(leg)) { row.details.append((key, summary)) } }
            if let pooled = Summary(rounds.flatMap(\.perRequest)) { row.details.append(("per_request_pooled", pooled)) }
            row.roundP50s = rounds.compactMap { Summary($0.perRequest)?.p50 }
            let busy = rounds.reduce(0) { $0 + $1.busyNanoseconds }
            row.rate = busy > 0 ? Double(rounds.reduce(0) { $0 + $1.requests }) / (busy / 1e9) : nil
        }
        return row
    }

    /// Issue 16's virtio-blk targets: per request p50 ≤ 1.2× pread/pwrite at QD 32, ≤ 2× at QD 1.
    static func blkTargets(_ report: BenchReport) -> [TargetCheck] {
        [(32, 1.2), (1, 2.0)].flatMap { (depth: Int, limit: Double) in
            ["read", "write"].map { operation in
                let row = report.row("blk-\(operation)-qd\(depth)")
                return TargetCheck(name: "virtio-blk \(operation) QD \(depth) / p\(operation), p50", measured: row?.ratioP50,
                                   limit: limit, unit: "x", note: row == nil ? "not run" : row?.unavailable)
            }
        }
    }

    static func blkSummary(_ report: BenchReport) -> String {
        var parts: [String] = []
        for depth in [1, 32] {
            let ratios = ["read", "write"].compactMap { operation in
                report.row("blk-\(operation)-qd\(depth)")?.ratioP50.map { "\(operation) \(times($0))" }
            }
            if !ratios.isEmpty { parts.append("QD \(depth) " + ratios.joined(separator: " ")) }
        }
        return parts.isEmpty ? "virtio-blk n/a" : "virtio-blk per request vs pread/pwrite p50: " + parts.joined(separator: ", ")
    }
}
