// Row 6's section: snapshot, restore and live migration figures (issue 14), one metric row per figure and
// guest set-up, median/min/max over the runs.

extension Sections {
    static func snapshot(_ options: BenchOptions) -> Section {
        Section(id: "snapshot", title: "6. Snapshot, restore and live migration (actor-vmm release binary, test guest, 1 vCPU)",
                method: "the test guest's dirty check: idle (beats every ~2 ms, writes nothing) or writing every word of "
                    + "N MiB of its RAM over and over. pause, snapshot, send-migration: the API request, sent to answered; "
                    + "restore: posix_spawn of actor-vmm --restore ...,resume=on to the guest's next serial byte; "
                    + "migration (unix: socket, two processes): total, downtime (source paused to destination's ack), "
                    + "rounds (the last is stop-and-copy) and bytes as the source logs them; running again: send-migration "
                    + "answered to the guest's next byte. \(options.snapshotRuns) run(s) per set-up, interleaved.",
                kind: .metrics)
    }

    static func snapshotRows(_ results: Result<SnapshotResults, BenchError>) -> [MetricRow] {
        guard case .success(let results) = results else {
            let error = if case .failure(let error) = results { error } else { BenchError("?") }
            return [MetricRow(id: "snapshot", label: "snapshot, restore, migration", unit: "",
                              unavailable: error.description.hasPrefix("not run") ? error.description : "failed: \(error)")]
        }
        let mib = 1.0 / 1_048_576
        var rows: [MetricRow] = []
        func add<S>(_ setup: SnapshotCase, _ result: Result<[S], BenchError>,
                    _ specs: [(String, String, String, (S) -> Double)]) {
            for (index, (suffix, label, unit, value)) in specs.enumerated() {
                var row = MetricRow(id: "\(setup.id)-\(suffix)", label: index == 0 ? "\(setup.label): \(label)" : "  \(label)", unit: unit)
                switch result {
                case .success(let samples): row.values = samples.map(value)
                case .failure(let error): row.unavailable = index == 0 ? "failed: \(error)" : "-"
                }
                rows.append(row)
            }
        }
        for (setup, result) in results.snapshots {
            add(setup, result, [
                ("pause", "pause (vm.pause)", "ms", { $0.pauseMs }),
                ("snapshot", "snapshot (vm.snapshot)", "ms", { $0.snapshotMs }),
                ("state", "state.bin", "KiB", { $0.stateBytes / 1024 }),
                ("memory-allocated", "memory.bin, allocated", "MiB", { $0.memoryAllocatedBytes * mib }),
                ("memory-size", "memory.bin, size", "MiB", { $0.memoryBytes * mib }),
                ("restore", "restore: spawn to the guest's next byte", "ms", { $0.restoreMs }),
            ])
        }
        for (setup, result) in results.migrations {
            add(setup, result, [
                ("migration-request", "live migration, send-migration request", "ms", { $0.requestMs }),
                ("migration-total", "total (source's report)", "ms", { $0.totalMs }),
                ("migration-downtime", "downtime", "ms", { $0.downtimeMs }),
                ("migration-rounds", "rounds", "", { $0.rounds }),
                ("migration-sent", "sent", "MiB", { $0.bytesSent * mib }),
                ("migration-running", "answered to the guest's next byte", "ms", { $0.runningAgainMs }),
            ])
        }
        return rows
    }

    /// The summary's part for row 6.
    static func snapshotSummary(_ report: BenchReport) -> String? {
        guard let snapshot = report.metric("128m-idle-snapshot")?.median, let restore = report.metric("128m-idle-restore")?.median else { return nil }
        var text = "snapshot 128 MiB idle \(fixed(snapshot, 1)) ms, restore \(fixed(restore, 1)) ms"
        if let downtime = report.metric("128m-idle-migration-downtime")?.median {
            text += ", migration downtime \(fixed(downtime, 1)) ms"
        }
        return text
    }
}
