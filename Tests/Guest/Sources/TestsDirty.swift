// TestsDirty.swift: a guest that keeps writing across a stretch of its RAM, for actor-vmm-bench's live
// migration rows (a memory-dirtying guest) and, with `dirty_mb=0`, an idle one that only beats.

/// `dirty`: prints `DIRTY READY`, then fills `dirty_mb` MiB (default 16) of RAM from `dirty_base_mb` MiB
/// (default 16) over and over (`DIRTY FILLED` after the first pass), pass p storing the value p in every
/// 64-bit word (`rep stosq`, a page at a time, so every page is dirtied on every pass; about 7 MiB/s on
/// the emulating development host), and prints `BEAT <n>` every `dirty_beat` TSC cycles (default 1e7, a
/// few ms) between two pages — the host's sign that the guest runs. With
/// `dirty_mb=0` it only beats (an idle guest: it writes nothing but its stack). Stops after
/// `dirty_passes` passes (default 0: never; with `dirty_mb=0`, after that many beats), then checks that
/// the first word of every page holds the last pass. The stretch must lie in RAM (boot_params' E820
/// table). Detail: `mb=<m> passes=<p> beats=<b>`, or `not-ram` / `mismatch-at=0x…`.
func dirtyTest(_ context: inout TestContext) -> Bool {
    let line = context.boot.commandLine
    func value(_ key: StaticString, _ fallback: UInt64) -> UInt64 {
        line.commandLineValue(of: key).flatMap { $0.parsedUnsigned() } ?? fallback
    }
    let mebibytes = value("dirty_mb", 16)
    let base = value("dirty_base_mb", 16) << 20
    let beatPeriod = max(value("dirty_beat", 10_000_000), 1)
    let passes = value("dirty_passes", 0)
    context.detail.write("mb=")
    context.detail.write(decimal: mebibytes)
    guard mebibytes == 0 || DirtyRam.isRam(context.boot, from: base, count: mebibytes << 20) else {
        context.detail.write(" not-ram")
        return false
    }
    var console = Serial.com1
    console.write("DIRTY READY\n")
    let pages = mebibytes << 8
    var beats: UInt64 = 0
    var next = CPU.timestamp() &+ beatPeriod
    func beatIfDue() {
        let now = CPU.timestamp()
        guard now >= next else { return }
        beats += 1
        next = now &+ beatPeriod
        console.write("BEAT ")
        console.write(decimal: beats)
        console.write("\n")
    }
    var pass: UInt64 = 0
    while passes == 0 || (mebibytes == 0 ? beats < passes : pass < passes) {
        if mebibytes == 0 {
            cpu_pause()
            beatIfDue()
            continue
        }
        pass += 1
        for page in 0..<pages {
            memory_fill64(base + page << 12, pass, 512)
            beatIfDue()
        }
        if pass == 1 { console.write("DIRTY FILLED\n") }
    }
    context.detail.write(" passes=")
    context.detail.write(decimal: pass)
    context.detail.write(" beats=")
    context.detail.write(decimal: beats)
    var page: UInt64 = 0
    while page < pages {
        let address = base + page << 12
        // SAFETY: inside the stretch checked to be RAM above; identity-mapped.
        if UnsafePointer<UInt64>(bitPattern: UInt(address))!.pointee != pass {
            context.detail.write(" mismatch-at=")
            context.detail.write(hex: address)
            return false
        }
        page += 1
    }
    return true
}

enum DirtyRam {
    static let e820EntriesOffset = 0x1E8  // u8
    static let e820TableOffset = 0x2D0    // 20 bytes each: address u64, size u64, type u32
    static let ramType: UInt32 = 1

    /// Whether [start, start + count) lies inside one usable-RAM entry of the E820 table.
    static func isRam(_ boot: BootParams, from start: UInt64, count: UInt64) -> Bool {
        guard let page = UnsafeRawPointer(bitPattern: boot.address) else { return false }
        let entries = Int(page.load(fromByteOffset: e820EntriesOffset, as: UInt8.self))
        for index in 0..<min(entries, 128) {
            let entry = page + e820TableOffset + index * 20
            let address = entry.loadUnaligned(as: UInt64.self)
            let size = entry.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            let type = entry.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
            if type == ramType && start >= address && start + count <= address + size { return true }
        }
        return false
    }
}
