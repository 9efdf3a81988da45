// Section 7 of the report: queue placement (QueueLoopsBench.swift).
extension Sections {
    static func queues(_ options: BenchOptions) -> Section {
        Section(id: "queues", title: "7. Queue placement: a 2-queue virtio-blk disk at QD 32, a loop per queue vs one per device",
                method: "a host thread plays the guest: 16 4 KiB reads posted on each of the two queues, both doorbell "
                    + "eventfds written, then poll() on the two queue vectors' eventfds until all 32 are on the used rings; "
                    + "per request = the batch / 32. The real VirtioBlock (io_uring when the host has it) on one loop "
                    + "(--event-loops per-device, the floor) or a queue worker per queue on a loop each (per-queue); threads "
                    + "unpinned; \(options.blkBatches) batches per row over \(options.rounds) interleaved rounds; "
                    + "req/s = requests per second of batch time. JSON details per batch, from the serving loops' event "
                    + "recorders: doorbells written -> first seen (wake-up), -> last request on a used ring (service), last "
                    + "interrupt -> the driver back from poll().",
                kind: .latency, rateHeader: "req/s")
    }

    static func queuesRow(_ config: QueueLoopsConfig, _ result: Result<[QueueLoopsSamples], BenchError>) -> LatencyRow {
        var row = LatencyRow(id: config.id, label: config.label, floorID: config.perQueue ? "queues-per-device" : nil)
        row.mainKey = "per_request"
        row.rateKey = "requests_per_second"
        row.attributes = [("event_loops", config.perQueue ? "per-queue" : "per-device"), ("queues", "2"), ("queue_depth", "32")]
        switch result {
        case .failure(let error):
            row.unavailable = "failed: \(error)"
        case .success(let rounds):
            row.main = Summary(rounds: rounds.map(\.perRequest))
            for (key, leg) in [("wakeup_per_batch", \QueueLoopsSamples.wakeup), ("service_per_batch", \.service),
                               ("interrupt_back_per_batch", \.interruptBack),
                               ("service_per_batch_each_loop", \.serviceEachLoop)] {
                if let summary = Summary(rounds: rounds.map { $0[keyPath: leg] }) { row.details.append((key, summary)) }
            }
            row.roundP50s = rounds.compactMap { Summary($0.perRequest)?.p50 }
            row.rate = medianValue(rounds.map(\.requestsPerSecond))
        }
        return row
    }
}
