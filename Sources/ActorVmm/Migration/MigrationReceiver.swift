import EpollLoop
import Glibc

/// What the receiving side of a live migration needs: a VM built from the source's configuration, its
/// memory filled by the rounds, and its state loaded at the end. Called from the migration's own thread.
public protocol MigrationDestination: AnyObject {
    /// Checks `config` and builds the VM (not running); returns its guest memory. An error is sent back to
    /// the source as a refusal (a different configuration, no room on this host).
    func prepareForMigration(config: [UInt8]) throws(SnapshotError) -> GuestMemory
    /// Loads vCPU, VM and device state into the VM built by ``prepareForMigration(config:)``.
    func restoreFromMigration(_ snapshot: VmSnapshot) throws(SnapshotError)
    /// The migration failed: release whatever ``prepareForMigration(config:)`` built.
    func abandonMigration()
}

public enum MigrationReceiver {
    /// Receives a migration over `channel` into `destination`. Returns the state that was loaded (the VM
    /// is then ready to run); on any failure — a closed connection, a bad frame, an abort from the source,
    /// a refused configuration or state — the destination is abandoned and the error thrown.
    public static func receive(into destination: MigrationDestination,
                               over channel: MigrationChannel) throws(SnapshotError) -> VmSnapshot {
        var prepared = false
        do throws(SnapshotError) {
            var hello = SnapshotDecoder(try channel.receive(.hello), context: "migration hello")
            guard try hello.raw(MigrationFrame.magic.count) == MigrationFrame.magic else {
                throw .notASnapshot("the migration stream")
            }
            let version = try hello.u32()
            guard version == MigrationFrame.version else {
                throw .unsupportedVersion(found: version, expected: MigrationFrame.version)
            }
            let config = try channel.receive(.config)
            let memory: GuestMemory
            do throws(SnapshotError) {
                memory = try destination.prepareForMigration(config: config)
                prepared = true
                try channel.acknowledge(nil)
            } catch {
                try? channel.acknowledge(error)
                throw error
            }
            while true {
                let (type, payload) = try channel.receive(expecting: "memory or state frame")
                switch type {
                case .memory:
                    try loadPages(payload, into: memory)
                case .state:
                    let snapshot = try VmSnapshot.decode(payload, name: "migration state")
                    _ = try channel.receive(.complete)
                    do throws(SnapshotError) {
                        try destination.restoreFromMigration(snapshot)
                    } catch {
                        try? channel.acknowledge(error)
                        throw error
                    }
                    try channel.acknowledge(nil)
                    return snapshot
                case .abort:
                    var input = SnapshotDecoder(payload, context: "abort frame")
                    throw .io("the source aborted the migration: \((try? input.string()) ?? "no reason")")
                default:
                    throw .invalid("migration stream: \(type) frame during the memory rounds")
                }
            }
        } catch {
            if prepared { destination.abandonMigration() }
            throw error
        }
    }

    /// Writes one memory frame's pages into `memory`, checking region and page indices.
    static func loadPages(_ payload: [UInt8], into memory: GuestMemory) throws(SnapshotError) {
        var input = SnapshotDecoder(payload, context: "memory frame")
        let regionIndex = Int(try input.u32())
        guard regionIndex < memory.regions.count else { throw .mismatch("memory frame for region \(regionIndex); this VM has \(memory.regions.count)") }
        let region = memory.regions[regionIndex]
        let page = Int(DirtyPages.pageSize)
        let count = try input.u32()
        for _ in 0..<count {
            let index = UInt64(try input.u32())
            guard (index + 1) * DirtyPages.pageSize <= region.size else {
                throw .mismatch("memory frame: page \(index) is outside region \(regionIndex) (\(region.size >> 20) MiB)")
            }
            let bytes = try input.raw(page)
            do throws(GuestMemoryError) {
                try memory.write(bytes: bytes, at: GuestAddress(region.start.rawValue + index * DirtyPages.pageSize))
            } catch {
                throw .invalid("memory frame: \(error)")
            }
        }
        try input.finish()
    }
}
