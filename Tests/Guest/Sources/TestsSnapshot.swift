// TestsSnapshot.swift: a check that keeps state across a snapshot and a restore into a new process.

/// Counted in RAM (a global), next to a counter kept in a local (a register or the stack): after a restore
/// both must have continued from where they were.
nonisolated(unsafe) var snapshotCounter: UInt64 = 0

/// `snapcount`: prints `SNAPCOUNT READY`, then counts, printing `TICK <n>` every ~1e8 TSC cycles until
/// `snap_ticks` ticks (default 40). The host pauses, snapshots and restores it somewhere in between; the
/// restored guest goes on from the tick it was at. Passes when the RAM and the local counter agree, the
/// ticks went up one at a time and the TSC never went backwards. Detail: `ticks=<n> count=<c>`.
func snapshotCountTest(_ context: inout TestContext) -> Bool {
    var console = Serial.com1
    let ticks = context.boot.commandLine.commandLineValue(of: "snap_ticks").flatMap { $0.parsedUnsigned() } ?? 40
    // TSC cycles per tick (`snap_period`, default 1e8: 30–50 ms on today's TSCs).
    let period = context.boot.commandLine.commandLineValue(of: "snap_period").flatMap { $0.parsedUnsigned() } ?? 100_000_000
    console.write("SNAPCOUNT READY\n")
    var local: UInt64 = 0
    var tick: UInt64 = 0
    var last = CPU.timestamp()
    var next = last &+ period
    var monotonic = true
    while tick < ticks {
        local &+= 1
        snapshotCounter &+= 1
        let now = CPU.timestamp()
        if now < last { monotonic = false }
        last = now
        if now >= next {
            tick += 1
            next = now &+ period
            console.write("TICK ")
            console.write(decimal: tick)
            console.write("\n")
        }
    }
    context.detail.write("ticks=")
    context.detail.write(decimal: tick)
    context.detail.write(" count=")
    context.detail.write(decimal: snapshotCounter)
    if !monotonic { context.detail.write(" tsc-went-backwards") }
    return local == snapshotCounter && monotonic
}
