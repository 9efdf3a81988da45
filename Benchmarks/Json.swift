// The JSON results file, written by hand (no Foundation): a tiny value type and its serialisation,
// and the mapping of a report onto it. Keys keep the order they are given in.

indirect enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func == (a: JSON, b: JSON) -> Bool { a.serialized() == b.serialized() }

    /// A number, or null when absent or not finite (JSON has no NaN or infinity).
    static func maybe(_ value: Double?) -> JSON {
        guard let value, value.isFinite else { return .null }
        return .number(value)
    }

    /// Compact JSON text (`pretty`: two-space indentation, one member per line).
    func serialized(pretty: Bool = false) -> String {
        var out = ""
        write(to: &out, pretty: pretty, indent: 0)
        return out
    }

    private func write(to out: inout String, pretty: Bool, indent: Int) {
        let newline = pretty ? "\n" + String(repeating: "  ", count: indent + 1) : ""
        let close = pretty ? "\n" + String(repeating: "  ", count: indent) : ""
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .number(let value): out += JSON.format(value)
        case .string(let value): out += JSON.quote(value)
        case .array(let values):
            guard !values.isEmpty else { out += "[]"; return }
            out += "["
            for (index, value) in values.enumerated() {
                out += (index > 0 ? "," : "") + newline
                value.write(to: &out, pretty: pretty, indent: indent + 1)
            }
            out += close + "]"
        case .object(let members):
            guard !members.isEmpty else { out += "{}"; return }
            out += "{"
            for (index, (key, value)) in members.enumerated() {
                out += (index > 0 ? "," : "") + newline + JSON.quote(key) + (pretty ? ": " : ":")
                value.write(to: &out, pretty: pretty, indent: indent + 1)
            }
            out += close + "}"
        }
    }

    /// Integers without a fraction; others with up to 4 decimals (nanosecond latencies need no more).
    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        var text = fixed(value, 4)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hexDigits = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hexDigits.count) + hexDigits
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension Summary {
    var json: JSON {
        .object([("n", .number(Double(count))), ("min", .number(min)), ("p10", .number(p10)), ("p50", .number(p50)),
                 ("p90", .number(p90)), ("p99", .number(p99)), ("max", .number(max)), ("mean", .number(mean))])
    }
}

extension BenchReport {
    /// The results file: machine, configuration, every section's rows (times in ns), targets, summary.
    var json: JSON {
        let config: JSON = .object([
            ("quick", .bool(options.quick)), ("rounds", .number(Double(options.rounds))),
            ("exit_round_trips_per_row", .number(Double(options.exitRoundTrips))),
            ("warmup_round_trips_per_run", .number(Double(options.exitWarmup))),
            ("notify_round_trips_per_row", .number(Double(options.notifySamples))),
            ("notify_warmup_per_run", .number(Double(options.notifyWarmup))),
            ("blk_qd1_requests_per_row", .number(Double(options.blkSamples))),
            ("blk_qd32_batches_per_row", .number(Double(options.blkBatches))),
            ("blk_warmup_doorbells_per_run", .number(Double(options.blkWarmup))),
            ("placement_rounds", .number(Double(options.placementRounds))),
            ("placement_seconds", .number(options.placementDuration)),
            ("start_runs", .number(Double(options.startRuns))),
            ("pin_vcpu", .maybe(options.pinVcpu.map(Double.init))), ("pin_loop", .maybe(options.pinLoop.map(Double.init))),
        ])
        let machineJSON: JSON = .object([
            ("cpu", .string(machine.cpuModel)), ("cpus", .number(Double(machine.cpuCount))),
            ("kernel", .string(machine.kernel)), ("kvm", .string(machine.kvmDescription)),
            ("tsc_hz", .number(tscHertz.rounded())),
        ])
        return .object([
            ("tool", .string("actor-vmm-bench")), ("format", .number(1)), ("started", .string(startedAt)),
            ("duration_s", .number(durationSeconds)), ("units", .string("nanoseconds unless a key says otherwise")),
            ("machine", machineJSON), ("config", config),
            ("sections", .array(sections.map(\.json))),
            ("targets", .array(targets.map { target in
                .object([("name", .string(target.name)), ("measured", .maybe(target.measured)),
                         ("limit", .number(target.limit)), ("unit", .string(target.unit)),
                         ("met", target.met.map(JSON.bool) ?? .null), ("note", target.note.map(JSON.string) ?? .null)])
            })),
            ("summary", .string(summary)),
        ])
    }
}

extension Section {
    var json: JSON {
        var members: [(String, JSON)] = [("id", .string(id)), ("title", .string(title)), ("method", .string(method))]
        switch kind {
        case .latency: members.append(("rows", .array(latency.map(\.json))))
        case .metrics: members.append(("rows", .array(metrics.map(\.json))))
        }
        return .object(members)
    }
}

extension LatencyRow {
    var json: JSON {
        var members: [(String, JSON)] = [("id", .string(id)), ("label", .string(label)),
                                         ("floor", floorID.map(JSON.string) ?? .null)]
        for (key, value) in attributes { members.append((key, .string(value))) }
        if let unavailable {
            members.append(("status", .string(unavailable)))
            return .object(members)
        }
        members.append(("status", .string("measured")))
        if let main { members.append((mainKey, main.json)) }
        if let handler { members.append((handlerKey, handler.json)) }
        if let guest { members.append(("guest", guest.json)) }
        for (key, summary) in details { members.append((key, summary.json)) }
        members += [("ratio_p50", .maybe(ratioP50)), ("ratio_p99", .maybe(ratioP99)),
                    ("guest_ratio_p50", .maybe(guestRatioP50)), ("guest_ratio_p99", .maybe(guestRatioP99))]
        if !roundP50s.isEmpty { members.append(("round_p50s", .array(roundP50s.map { .number($0) }))) }
        if let rate { members.append((rateKey, .number(rate))) }
        if let slowPathShare { members.append(("via_loop_share", .number(slowPathShare))) }
        return .object(members)
    }
}

extension MetricRow {
    var json: JSON {
        var members: [(String, JSON)] = [("id", .string(id)), ("label", .string(label)), ("unit", .string(unit)),
                                         ("floor", floorID.map(JSON.string) ?? .null)]
        if let unavailable { members.append(("status", .string(unavailable))) }
        members += [("median", .maybe(median)), ("min", .maybe(min)), ("max", .maybe(max)),
                    ("values", .array(values.map { .number($0) })), ("target_max", .maybe(target)),
                    ("met", met.map(JSON.bool) ?? .null)]
        return .object(members)
    }
}
