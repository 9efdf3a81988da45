import EpollLoop
import Glibc

/// What the sending side of a live migration needs from the running VM. Called from the migration's own
/// thread; `pause`/`resume` block until done.
public protocol MigrationSource: AnyObject, Sendable {
    var memory: GuestMemory { get }
    /// The configuration the destination builds its VM from.
    func migrationConfig() -> [UInt8]
    func setDirtyLogging(_ on: Bool) throws(KvmError)
    func fetchDirtyPages() throws(KvmError) -> DirtyPages
    /// Pauses the vCPUs and quiesces every device.
    func pauseForMigration()
    /// Undoes ``pauseForMigration()`` (the migration failed: the source carries on).
    func resumeAfterMigration()
    /// vCPU, VM and device state (no memory); called while paused.
    func captureForMigration() throws(SnapshotError) -> VmSnapshot
    /// Why the VM has stopped (the guest powered off, asked for a reset, …), or nil while it runs. A VM
    /// that stopped during the migration is not sent: its destination would go on from a machine that is
    /// gone (a powered-off guest spinning in its power-off path).
    var stopReason: String? { get }
}

/// Limits of the pre-copy phase.
public struct MigrationOptions: Sendable {
    /// Stop copying while running once the rest would take at most this long to send (the guest's pause).
    public var downtimeTarget: Duration
    /// Stop after this many rounds while running, whatever is left.
    public var maxIterations: Int
    public init(downtimeTarget: Duration = .milliseconds(300), maxIterations: Int = 8) {
        self.downtimeTarget = downtimeTarget
        self.maxIterations = maxIterations
    }
}

/// What a finished migration did.
public struct MigrationReport: Sendable, CustomStringConvertible {
    /// Pages sent per round (round 0 is the whole of RAM, zero pages skipped; the last is stop-and-copy).
    public var pagesPerRound: [Int] = []
    public var bytesSent: UInt64 = 0
    /// From pausing the source to the destination's acknowledgement.
    public var downtimeNanoseconds: UInt64 = 0
    public var totalNanoseconds: UInt64 = 0

    /// The line `vm.send-migration` logs at info (`-v`), which `actor-vmm-bench` parses: "3 rounds (pages
    /// 29/4/1), 139264 bytes sent, downtime 16.042 ms, total 78.310 ms" (the last round is stop-and-copy).
    public var description: String {
        "\(pagesPerRound.count) rounds (pages \(pagesPerRound.map(String.init).joined(separator: "/"))), \(bytesSent) bytes sent, "
            + "downtime \(Self.milliseconds(downtimeNanoseconds)) ms, total \(Self.milliseconds(totalNanoseconds)) ms"
    }

    /// Nanoseconds as milliseconds with three decimals ("16.042").
    static func milliseconds(_ nanoseconds: UInt64) -> String {
        let micros = nanoseconds / 1_000
        let fraction = String(micros % 1_000)
        return "\(micros / 1_000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }
}

public enum MigrationSender {
    static let pagesPerFrame = 256

    /// Migrates `source` over `channel`: hello and config (the destination builds its VM), pre-copy rounds
    /// from the dirty log while the guest runs, then pause, the last dirty pages and the state, and the
    /// destination's acknowledgement. On any failure the source is resumed intact, dirty logging is
    /// turned off, the destination is told (abort) and the error is thrown; on success the source stays
    /// paused (the caller shuts it down).
    public static func send(source: MigrationSource, over channel: MigrationChannel,
                            options: MigrationOptions = MigrationOptions()) throws(SnapshotError) -> MigrationReport {
        let start = monotonicNanoseconds()
        var report = MigrationReport()
        var paused = false, logging = false
        do throws(SnapshotError) {
            var hello = SnapshotEncoder()
            hello.raw(MigrationFrame.magic)
            hello.u32(MigrationFrame.version)
            try channel.send(.hello, hello.bytes)
            try channel.send(.config, source.migrationConfig())
            try channel.awaitAcknowledgement(for: "configuration")

            try kvm { () throws(KvmError) in try source.setDirtyLogging(true) }
            logging = true
            _ = try kvm { () throws(KvmError) in try source.fetchDirtyPages() }  // clean slate: round 0 sends everything
            var dirty = DirtyPages.all(of: source.memory)
            var skipZero = true
            while true {
                let roundStart = monotonicNanoseconds(), before = channel.bytesSent
                report.pagesPerRound.append(try sendPages(dirty, of: source.memory, over: channel, skipZero: skipZero))
                skipZero = false
                let elapsed = max(monotonicNanoseconds() - roundStart, 1)
                let bytesPerSecond = Double(channel.bytesSent - before) / (Double(elapsed) / 1e9)
                dirty = try kvm { () throws(KvmError) in try source.fetchDirtyPages() }
                try checkRunning(source)
                let estimate = Double(dirty.count) * Double(DirtyPages.pageSize) / max(bytesPerSecond, 1)
                let target = Double(options.downtimeTarget.components.seconds) + Double(options.downtimeTarget.components.attoseconds) / 1e18
                if estimate <= target || report.pagesPerRound.count >= options.maxIterations { break }
            }

            let pauseStart = monotonicNanoseconds()
            source.pauseForMigration()
            paused = true
            try checkRunning(source)  // every exit before the pause has been handled: a power-off shows now
            // What the last running round left, plus what was written until the vCPUs stopped.
            dirty.formUnion(try kvm { () throws(KvmError) in try source.fetchDirtyPages() })
            report.pagesPerRound.append(try sendPages(dirty, of: source.memory, over: channel, skipZero: false))
            var snapshot = try source.captureForMigration()
            snapshot.memory = nil
            try channel.send(.state, snapshot.encode())
            try channel.send(.complete)
            try channel.awaitAcknowledgement(for: "state")
            report.downtimeNanoseconds = monotonicNanoseconds() - pauseStart
            try? source.setDirtyLogging(false)
        } catch {
            var reason = SnapshotEncoder()
            reason.string(error.description)
            try? channel.send(.abort, reason.bytes)
            if logging { try? source.setDirtyLogging(false) }
            if paused { source.resumeAfterMigration() }
            throw error
        }
        report.bytesSent = channel.bytesSent
        report.totalNanoseconds = monotonicNanoseconds() - start
        return report
    }

    /// Sends the pages marked in `dirty`, up to 256 a frame; `skipZero` leaves out pages that are all zero
    /// (the destination's fresh RAM is zero). Returns how many pages were sent.
    static func sendPages(_ dirty: DirtyPages, of memory: GuestMemory, over channel: MigrationChannel,
                          skipZero: Bool) throws(SnapshotError) -> Int {
        var sent = 0
        let page = Int(DirtyPages.pageSize)
        for (regionIndex, region) in memory.regions.enumerated() {
            let base = UnsafeRawPointer(bitPattern: region.hostAddress)!
            var batch: [UInt32] = []
            func flush() throws(SnapshotError) {
                guard !batch.isEmpty else { return }
                var out = SnapshotEncoder()
                out.u32(UInt32(regionIndex))
                out.u32(UInt32(batch.count))
                for index in batch {
                    out.u32(index)
                    // SAFETY: `index` is a page of this region (from its bitmap, bounded by its page count).
                    out.raw(Array(UnsafeRawBufferPointer(start: base + Int(index) * page, count: page)))
                }
                try channel.send(.memory, out.bytes)
                sent += batch.count
                batch.removeAll(keepingCapacity: true)
            }
            let pages = Int(region.size) / page
            for (w, word) in dirty.bitmaps[regionIndex].enumerated() where word != 0 {
                var bits = word
                while bits != 0 {
                    let index = w * 64 + bits.trailingZeroBitCount
                    bits &= bits - 1
                    guard index < pages else { continue }
                    // SAFETY: index < pages, so the page lies inside the region's mapping.
                    if skipZero && isZeroPage(base + index * page, count: page) { continue }
                    batch.append(UInt32(index))
                    if batch.count == pagesPerFrame { try flush() }
                }
            }
            try flush()
        }
        return sent
    }

    /// Throws if the source's VM has stopped since the migration began.
    static func checkRunning(_ source: MigrationSource) throws(SnapshotError) {
        if let reason = source.stopReason { throw .io("the VM stopped during the migration (\(reason))") }
    }

    static let zeroPage = [UInt8](repeating: 0, count: Int(DirtyPages.pageSize))

    static func isZeroPage(_ pointer: UnsafeRawPointer, count: Int) -> Bool {
        zeroPage.withUnsafeBytes { memcmp(pointer, $0.baseAddress!, count) == 0 }
    }

    private static func kvm<T>(_ body: () throws(KvmError) -> T) throws(SnapshotError) -> T {
        do throws(KvmError) {
            return try body()
        } catch {
            throw .io("dirty-page logging: \(error)")
        }
    }
}
