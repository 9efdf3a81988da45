// actor-vmm-bench's command line.
import Glibc

let benchUsage = """
    actor-vmm-bench: device-path latency benchmarks for ActorVMM, measured side by side with their floors.

    usage: swift run -c release actor-vmm-bench [--quick] [options]

      --quick              a short run (under a minute): fewer samples and rounds
      --rounds N           interleaved rounds of the exit rows (default 5; quick 3)
      --samples N          measured round trips per exit row, over all rounds (default 40000; quick 3000)
      --warmup N           untimed round trips per guest run (default 1000; quick 300)
      --notify-samples N   measured doorbells per notify row, over all rounds (default 20000; quick 1500)
      --blk-samples N      measured requests per virtio-blk QD 1 row, over all rounds (default 10000; quick 1500)
      --blk-batches N      measured batches of 32 per virtio-blk QD 32 row, over all rounds (default 2000; quick 300)
      --placement-seconds S  measured seconds per placement run (default 1.5; quick 0.3)
      --start-runs N       actor-vmm processes started for the start/memory row (default 15; quick 5)
      --snapshot-runs N    runs of each snapshot/restore and migration set-up (default 3; quick 1)
      --pin-vcpu CPU       host CPU for the vCPU thread in the exit rows (default 0)
      --pin-loop CPU       host CPU for the device loop in the cross-core rows (default 1)
      --no-pin             pin nothing (the same-core/cross-core rows become one unpinned row)
      --only LIST          sections to run, comma-separated: exit,notify,blk,placement,start,snapshot,queues
                           (default all; blk-host: row 3's floors and guest-less rows only)
      --out DIR            results folder (default results/ in the package)
      --vmm PATH           the actor-vmm binary for the start and snapshot rows (default: swift build -c release
                           --product actor-vmm, then .build/release/actor-vmm)
      --guest PATH         the test guest ELF (default: Tests/Guest/build.sh)
      -h, --help           this text

    Writes a table to stdout, and bench-<time>.json, .svg and .txt (plus latest.*) to the results folder.
    The last line of the output is a one-line summary with the exit hand-off ratio.
    """

struct BenchOptions: Sendable {
    var quick = false
    var rounds = 5
    var exitRoundTrips = 40_000
    var exitWarmup = 1_000
    var notifySamples = 20_000
    var notifyWarmup = 200
    var blkSamples = 10_000
    var blkBatches = 2_000
    var blkWarmup = 64
    var placementRounds = 3
    var placementWarmup = 0.2
    var placementDuration = 1.5
    var startRuns = 15
    var snapshotRuns = 3
    var pinVcpu: Int? = 0
    var pinLoop: Int? = 1
    var sections: [String] = BenchOptions.allSections
    var outputDirectory: String?
    var vmmPath: String?
    var guestPath: String?
    var showHelp = false

    /// `blk-host`: row 3's floors and host-driver rows only (no guest: also runs under valgrind).
    static let allSections = ["exit", "notify", "blk", "blk-host", "placement", "start", "snapshot", "queues"]

    /// Applies the `--quick` sizes.
    mutating func makeQuick() {
        quick = true
        rounds = 3
        exitRoundTrips = 3_000
        exitWarmup = 300
        notifySamples = 1_500
        notifyWarmup = 50
        blkSamples = 1_500
        blkBatches = 300
        blkWarmup = 32
        placementRounds = 1
        placementWarmup = 0.05
        placementDuration = 0.3
        startRuns = 5
        snapshotRuns = 1
    }

    /// Whether the same-core and cross-core rows can be told apart (pinning on, two different CPUs).
    var crossCore: Bool { pinVcpu != nil && pinLoop != nil && pinVcpu != pinLoop }

    /// Parses `arguments` (without the program name). `--quick` applies first, wherever it appears, so
    /// explicit sizes override it.
    static func parse(_ arguments: [String], cpuCount: Int) throws(BenchError) -> BenchOptions {
        var options = BenchOptions()
        if arguments.contains("--quick") { options.makeQuick() }
        if cpuCount < 2 { options.pinLoop = nil }
        var index = 0
        func value(_ name: String) throws(BenchError) -> String {
            index += 1
            guard index < arguments.count else { throw BenchError("\(name) needs a value") }
            return arguments[index]
        }
        func integer(_ name: String, minimum: Int = 1) throws(BenchError) -> Int {
            let text = try value(name)
            guard let number = Int(text), number >= minimum else { throw BenchError("\(name) \(text): not a number >= \(minimum)") }
            return number
        }
        func cpu(_ name: String) throws(BenchError) -> Int {
            let number = try integer(name, minimum: 0)
            guard number < cpuCount else { throw BenchError("\(name) \(number): this host has CPUs 0-\(cpuCount - 1)") }
            return number
        }
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "--quick": break
            case "--rounds": options.rounds = try integer(argument)
            case "--samples": options.exitRoundTrips = try integer(argument)
            case "--warmup": options.exitWarmup = try integer(argument, minimum: 0)
            case "--notify-samples": options.notifySamples = try integer(argument)
            case "--blk-samples": options.blkSamples = try integer(argument)
            case "--blk-batches": options.blkBatches = try integer(argument)
            case "--placement-seconds":
                let text = try value(argument)
                guard let seconds = Double(text), seconds > 0, seconds <= 60 else {
                    throw BenchError("\(argument) \(text): not a number of seconds in (0, 60]")
                }
                options.placementDuration = seconds
            case "--start-runs": options.startRuns = try integer(argument)
            case "--snapshot-runs": options.snapshotRuns = try integer(argument)
            case "--pin-vcpu": options.pinVcpu = try cpu(argument)
            case "--pin-loop": options.pinLoop = try cpu(argument)
            case "--no-pin": options.pinVcpu = nil; options.pinLoop = nil
            case "--only":
                let list = try value(argument).split(separator: ",").map(String.init)
                for name in list where !allSections.contains(name) {
                    throw BenchError("--only: unknown section \(name) (known: \(allSections.joined(separator: ",")))")
                }
                options.sections = list
            case "--out": options.outputDirectory = try value(argument)
            case "--vmm": options.vmmPath = try value(argument)
            case "--guest": options.guestPath = try value(argument)
            case "-h", "--help": options.showHelp = true
            default: throw BenchError("unknown option \(argument) (see --help)")
            }
            index += 1
        }
        if options.pinVcpu == nil && options.pinLoop != nil {
            options.pinLoop = nil  // --no-pin then --pin-loop: a lone loop pin has no row to show it
        }
        options.rounds = min(options.rounds, options.exitRoundTrips)
        return options
    }
}
