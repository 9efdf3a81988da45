// actor-vmm-bench: device-path latency benchmarks, each row side by side with its floor in one run.
//
// 1. exit round trips (PIO, MMIO) per hand-off strategy vs raw inline handling   -> ExitBench.swift
// 2. notify path (guest doorbell -> ... -> guest IRQ) vs eventfd ping-pongs         -> NotifyBench.swift
// 3. virtio-blk service time per 4 KiB request, QD 1 and 32, vs pread/pwrite      -> BlkBench.swift
// 4. placement: one shared loop vs a loop per device, 1/2/4 busy devices          -> PlacementBench.swift
// 5. VMM start (CPU ms, wall) and RSS overhead of the real actor-vmm binary       -> StartBench.swift
// 6. snapshot, restore and live migration of the real actor-vmm binary             -> SnapshotBench.swift
// 7. a 2-queue virtio-blk disk at QD 32: a loop per queue vs one loop per device   -> QueueLoopsBench.swift
// Output: a table on stdout, JSON + SVG + text under results/, and a one-line summary as the last line.
import ActorVmm
import EpollLoop
import Glibc

/// Progress and errors go to stderr, so stdout holds the table and the summary only.
func note(_ line: String) {
    var bytes = Array("actor-vmm-bench: \(line)\n".utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

let machine = MachineInfo.current()
let options: BenchOptions
do {
    options = try BenchOptions.parse(Array(CommandLine.arguments.dropFirst()), cpuCount: machine.cpuCount)
} catch {
    note("error: \(error)")
    exit(2)
}
if options.showHelp {
    print(benchUsage)
    exit(0)
}
guard Kvm.isAvailable else {
    note("error: /dev/kvm is not available (read-write): every row needs a real guest")
    exit(1)
}

let root = packageRoot()
let runStart = monotonicNanoseconds()
let stamps = utcTimestamps()
let outputDirectory = options.outputDirectory ?? root + "/results"
do {
    try makeDirectories(outputDirectory)
} catch {
    note("error: \(error)")
    exit(1)
}

// Build what the run needs before measuring anything (a build during a measurement would be noise).
var vmmPath = options.vmmPath
if (options.sections.contains("start") || options.sections.contains("snapshot")) && vmmPath == nil {
    note("building actor-vmm (swift build -c release --product actor-vmm)")
    let build = runProcess(["swift", "build", "-c", "release", "--product", "actor-vmm", "--package-path", root])
    if build.status == 0 { vmmPath = root + "/.build/release/actor-vmm" } else { note("building actor-vmm failed") }
}
var helloPath: String?
if options.sections.contains("start") {
    switch HelloFloor.build(root: root) {
    case .success(let path): helloPath = path
    case .failure(let error): note("the start row's floor is unavailable: \(error)")
    }
}
let guestPath: String
if let path = options.guestPath {
    guestPath = path
} else {
    let build = runProcess(["/bin/bash", root + "/Tests/Guest/build.sh"])
    guard build.status == 0 else {
        note("error: Tests/Guest/build.sh failed")
        exit(1)
    }
    guestPath = String(build.stdout.split(separator: "\n").last ?? "")
}

let clock = TscClock.calibrate()
note("TSC \(fixed(clock.hertz / 1e6, 1)) MHz; guest \(guestPath); \(options.quick ? "quick" : "full") run")
var report = BenchReport(machine: machine, options: options, tscHertz: clock.hertz, startedAt: stamps.iso)

// 1. Exit round trips.
var exitSection = Sections.exit(options)
if options.sections.contains("exit") {
    let results = await ExitBench(guestPath: guestPath, options: options, clock: clock).run(progress: note)
    exitSection.latency = results.map { Sections.exitRow($0.0, $0.1) }
} else {
    exitSection.latency = [LatencyRow(id: "exit", label: "exit round trips", floorID: nil, unavailable: "not run (--only)")]
}
report.sections.append(exitSection)

// 2. Notify path.
var notifySection = Sections.notify(options)
if options.sections.contains("notify") {
    let results = await NotifyBench(guestPath: guestPath, options: options, clock: clock).run(progress: note)
    notifySection.latency = results.map { Sections.notifyRow($0.0, $0.1) }
} else {
    notifySection.latency = [LatencyRow(id: "notify", label: "notify path", floorID: nil, unavailable: "not run (--only)")]
}
report.sections.append(notifySection)

// 3. virtio-blk service time.
var blkSection = Sections.blk(options)
if options.sections.contains("blk") || options.sections.contains("blk-host") {
    let results = await BlkBench(guestPath: guestPath, options: options, clock: clock)
        .run(guest: options.sections.contains("blk"), progress: note)
    blkSection.latency = results.map { Sections.blkRow($0.0, $0.1) }
} else {
    blkSection.latency = [LatencyRow(id: "blk", label: "virtio-blk", floorID: nil, unavailable: "not run (--only)")]
}
report.sections.append(blkSection)

// 4. Placement.
var placementSection = Sections.placement(options)
if options.sections.contains("placement") {
    let results = await PlacementBench(options: options, clock: clock).run(progress: note)
    placementSection.latency = results.map { Sections.placementRow($0.0, $0.1) }
} else {
    placementSection.latency = [LatencyRow(id: "placement", label: "placement", floorID: nil, unavailable: "not run (--only)")]
}
report.sections.append(placementSection)

// 5. VMM start and memory.
var startSection = Sections.start(options)
if options.sections.contains("start") {
    if let vmmPath {
        let result = StartBench(vmmPath: vmmPath, helloPath: helloPath, runs: options.startRuns,
                                directory: outputDirectory).run(progress: note)
        startSection.metrics = Sections.startRows(result)
    } else {
        startSection.metrics = Sections.startRows(.failure(BenchError("actor-vmm could not be built")))
    }
} else {
    startSection.metrics = Sections.startRows(.failure(BenchError("not run (--only)")))
}
report.sections.append(startSection)

// 6. Snapshot, restore and live migration.
var snapshotSection = Sections.snapshot(options)
if options.sections.contains("snapshot") {
    if let vmmPath {
        let bench = SnapshotBench(vmmPath: vmmPath, guestPath: guestPath, runs: options.snapshotRuns,
                                  snapshotCases: SnapshotBench.snapshotCases(quick: options.quick),
                                  migrationCases: SnapshotBench.migrationCases(quick: options.quick))
        snapshotSection.metrics = Sections.snapshotRows(.success(bench.run(progress: note)))
    } else {
        snapshotSection.metrics = Sections.snapshotRows(.failure(BenchError("actor-vmm could not be built")))
    }
} else {
    snapshotSection.metrics = Sections.snapshotRows(.failure(BenchError("not run (--only)")))
}
report.sections.append(snapshotSection)

// 7. Queue placement.
var queuesSection = Sections.queues(options)
if options.sections.contains("queues") {
    let results = await QueueLoopsBench(options: options, clock: clock).run(progress: note)
    queuesSection.latency = results.map { Sections.queuesRow($0.0, $0.1) }
} else {
    queuesSection.latency = [LatencyRow(id: "queues", label: "queue placement", floorID: nil, unavailable: "not run (--only)")]
}
report.sections.append(queuesSection)

report.compareWithFloors()
report.targets = Sections.targets(report)
report.durationSeconds = Double(monotonicNanoseconds() - runStart) / 1e9

// Files, then the table and the summary line (last).
let base = outputDirectory + "/bench-" + stamps.compact
let shownBase = base.hasPrefix(root + "/") ? String(base.dropFirst(root.count + 1)) : base
report.summary = Sections.summary(report, files: shownBase + ".{json,svg,txt}")
let table = TextTable.render(report)
do {
    let json = report.json.serialized(pretty: true) + "\n"
    let svg = SvgPlot.render(report)
    for (suffix, text) in [(".json", json), (".svg", svg), (".txt", table + "\n" + report.summary + "\n")] {
        try writeTextFile(base + suffix, text)
        try writeTextFile(outputDirectory + "/latest" + suffix, text)
    }
} catch {
    note("error: \(error)")
}
print(table)
print(report.summary)
