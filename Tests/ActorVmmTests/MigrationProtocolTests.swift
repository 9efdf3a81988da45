@testable import ActorVmm
import Glibc
import Synchronization
import Testing

/// A source VM without KVM: RAM with a pattern, a "guest" that dirties a few pages per round.
final class FakeSource: MigrationSource, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): used by the one migration thread; the flags are read after it joined.
    let memory: GuestMemory
    var logging = false, paused = false, resumed = false
    var round = 0
    /// Pages the guest writes in each round while it runs (it keeps dirtying the same few).
    let dirtyPerRound: Int
    /// The round in which the guest powers off (nil: never; `Int.max`: just before the source pauses it).
    var powersOffInRound: Int?
    var stopReason: String? {
        guard let at = powersOffInRound, round >= at || (paused && at == .max) else { return nil }
        return "guest powered off"
    }

    init(dirtyPerRound: Int = 3) throws {
        memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20), (GuestAddress(0x100000), 256 << 10)])
        self.dirtyPerRound = dirtyPerRound
        for page in stride(from: 0, to: 256, by: 5) { try memory.write(UInt64(page * 31 + 1), at: GuestAddress(UInt64(page) * 4096 + 8)) }
        try memory.write(bytes: [1, 2, 3], at: GuestAddress(0x100000 + 4096 * 7))
    }

    func migrationConfig() -> [UInt8] { Array("config".utf8) }
    func setDirtyLogging(_ on: Bool) throws(KvmError) { logging = on }

    func fetchDirtyPages() throws(KvmError) -> DirtyPages {
        var dirty = DirtyPages(bitmaps: memory.regions.map { [UInt64](repeating: 0, count: Int($0.size / 4096 + 63) / 64) })
        guard !paused else { return dirty }
        round += 1
        for i in 0..<dirtyPerRound {  // the guest runs on: writes a few pages
            let page = 10 + i
            try? memory.write(UInt64(round * 1000 + i), at: GuestAddress(UInt64(page) * 4096))
            dirty.bitmaps[0][page / 64] |= 1 << UInt64(page % 64)
        }
        return dirty
    }

    func pauseForMigration() { paused = true }
    func resumeAfterMigration() { resumed = true; paused = false }

    func captureForMigration() throws(SnapshotError) -> VmSnapshot {
        var vm = VmKernelState()
        for part in [VmKernelState.Part.picMaster, .picSlave, .ioapic, .clock] { vm[part] = [UInt8(part.rawValue)] }
        var vcpu = VcpuState(id: 0)
        for part in [VcpuState.Part.regs, .sregs, .lapic, .mpState, .events] { vcpu[part] = [UInt8(part.rawValue)] }
        return VmSnapshot(config: migrationConfig(), vm: vm, vcpus: [vcpu], devices: [("disk0", [9, 9])], memory: nil)
    }
}

final class FakeDestination: MigrationDestination, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): used by the one receiving thread; read after it joined.
    var memory: GuestMemory?
    var restored: VmSnapshot?
    var abandoned = false
    var refuseConfig = false, refuseState = false

    func prepareForMigration(config: [UInt8]) throws(SnapshotError) -> GuestMemory {
        if refuseConfig { throw .mismatch("2 vCPUs here, 1 in the source") }
        let memory = try! GuestMemory(layout: [(GuestAddress(0), 1 << 20), (GuestAddress(0x100000), 256 << 10)])
        self.memory = memory
        return memory
    }

    func restoreFromMigration(_ snapshot: VmSnapshot) throws(SnapshotError) {
        if refuseState { throw .mismatch("no device 'disk0' here") }
        restored = snapshot
    }

    func abandonMigration() { abandoned = true }
}

@Suite struct MigrationProtocolTests {
    static func channels() -> (MigrationChannel, MigrationChannel) {
        var fds: [Int32] = [0, 0]
        socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds)
        return (MigrationChannel(fd: fds[0]), MigrationChannel(fd: fds[1]))
    }

    /// Runs the receiver on its own thread; returns its result once the sender is done.
    static func migrate(_ source: FakeSource, _ destination: FakeDestination, options: MigrationOptions = MigrationOptions(),
                        sender: (MigrationChannel) throws(SnapshotError) -> MigrationReport)
        -> (Result<MigrationReport, SnapshotError>, Result<VmSnapshot, SnapshotError>) {
        let (a, b) = channels()
        let received = Mutex<Result<VmSnapshot, SnapshotError>?>(nil)
        let unsafeDestination = destination
        let thread = TestThread {
            let result = Result { () throws(SnapshotError) in try MigrationReceiver.receive(into: unsafeDestination, over: b) }
            b.close()
            received.withLock { $0 = result }
        }
        let sent = Result { () throws(SnapshotError) in try sender(a) }
        a.close()
        thread.join()
        return (sent, received.withLock { $0! })
    }

    @Test func memoryAndStateArriveAndTheSourceStaysPaused() throws {
        let source = try FakeSource(), destination = FakeDestination()
        let (sent, received) = Self.migrate(source, destination) { channel throws(SnapshotError) in
            try MigrationSender.send(source: source, over: channel, options: MigrationOptions(downtimeTarget: .zero, maxIterations: 4))
        }
        let report = try sent.get()
        let snapshot = try received.get()
        #expect(report.pagesPerRound.count == 5, "4 rounds while running, then stop-and-copy: \(report)")
        // 52 patterned pages + 1 in the second region + pages 11 and 12 the guest wrote before round 0 began.
        #expect(report.pagesPerRound[0] == 55, "round 0 sends only the non-zero pages")
        #expect(report.pagesPerRound[1] == 3, "then what the guest dirtied")
        #expect(report.pagesPerRound.last == 3, "stop-and-copy sends what the last running round left")
        let dst = destination.memory!
        for region in source.memory.regions {
            #expect(try dst.readBytes(at: region.start, count: Int(region.size)) == source.memory.readBytes(at: region.start, count: Int(region.size)))
        }
        #expect(snapshot.devices.first?.id == "disk0" && destination.restored == snapshot)
        #expect(source.paused && !source.resumed && !source.logging, "the source stays paused for its owner to shut down")
    }

    @Test func aRefusedConfigurationLeavesTheSourceRunning() throws {
        let source = try FakeSource(), destination = FakeDestination()
        destination.refuseConfig = true
        let (sent, received) = Self.migrate(source, destination) { channel throws(SnapshotError) in
            try MigrationSender.send(source: source, over: channel)
        }
        #expect(throws: SnapshotError.io("the destination refused the configuration: snapshot does not match this VM: 2 vCPUs here, 1 in the source")) {
            try sent.get()
        }
        #expect(throws: SnapshotError.self) { try received.get() }
        #expect(!source.paused && !source.logging && !destination.abandoned)
    }

    @Test func aRefusedStateResumesTheSourceAndAbandonsTheDestination() throws {
        let source = try FakeSource(), destination = FakeDestination()
        destination.refuseState = true
        let (sent, _) = Self.migrate(source, destination) { channel throws(SnapshotError) in
            try MigrationSender.send(source: source, over: channel)
        }
        #expect(throws: SnapshotError.io("the destination refused the state: snapshot does not match this VM: no device 'disk0' here")) {
            try sent.get()
        }
        #expect(source.resumed && !source.paused && !source.logging, "the source carries on")
        #expect(destination.abandoned)
    }

    /// The guest powers off while its memory is being copied: nothing is migrated (the destination would
    /// go on from a machine that is gone), the destination abandons what it built.
    @Test(arguments: [1, 3, Int.max]) func aGuestThatStopsDuringTheMigrationIsNotSent(round: Int) throws {
        let source = try FakeSource(), destination = FakeDestination()
        source.powersOffInRound = round
        let (sent, received) = Self.migrate(source, destination) { channel throws(SnapshotError) in
            try MigrationSender.send(source: source, over: channel, options: MigrationOptions(downtimeTarget: .zero, maxIterations: 2))
        }
        #expect(throws: SnapshotError.io("the VM stopped during the migration (guest powered off)")) { try sent.get() }
        #expect(throws: SnapshotError.self) { try received.get() }
        #expect(destination.abandoned && destination.restored == nil, "the destination keeps nothing")
        #expect(!source.logging)
    }

    @Test func aConnectionClosedMidwayFailsBothSidesCleanly() throws {
        let source = try FakeSource(), destination = FakeDestination()
        let (sent, received) = Self.migrate(source, destination) { channel throws(SnapshotError) in
            var hello = SnapshotEncoder()
            hello.raw(MigrationFrame.magic)
            hello.u32(MigrationFrame.version)
            try channel.send(.hello, hello.bytes)
            try channel.send(.config, [])
            try channel.awaitAcknowledgement(for: "configuration")
            try channel.send(.memory, [0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0])  // a page announced, its bytes missing
            throw SnapshotError.io("sender gave up")
        }
        #expect(throws: SnapshotError.io("sender gave up")) { try sent.get() }
        #expect(throws: SnapshotError.truncated("memory frame: needed 4096 bytes at offset 12, 0 left")) { try received.get() }
        #expect(destination.abandoned, "what the destination built is released")
    }

    @Test func otherVersionsAndBadUrlsAreOneLineErrors() throws {
        let destination = FakeDestination()
        let (_, received) = Self.migrate(try FakeSource(), destination) { channel throws(SnapshotError) in
            var hello = SnapshotEncoder()
            hello.raw(MigrationFrame.magic)
            hello.u32(7)
            try channel.send(.hello, hello.bytes)
            return MigrationReport()
        }
        #expect(throws: SnapshotError.unsupportedVersion(found: 7, expected: 1)) { try received.get() }
        #expect(try MigrationEndpoint(url: "tcp:127.0.0.1:6000") == .tcp(host: "127.0.0.1", port: 6000))
        #expect(try MigrationEndpoint(url: "unix:/tmp/m.sock") == .unix("/tmp/m.sock"))
        #expect(throws: SnapshotError.invalid("'tcp:example:0': a tcp: URL needs host:port (expected tcp:192.0.2.1:6000)")) { try MigrationEndpoint(url: "tcp:example:0") }
        #expect(throws: SnapshotError.self) { try MigrationEndpoint(url: "http://x") }
    }

    @Test func unixSocketsCarryAMigration() throws {
        let path = "/tmp/actorvmm-mig-\(getpid()).sock"
        let endpoint = try MigrationEndpoint(url: "unix:\(path)")
        let source = try FakeSource(), destination = FakeDestination()
        let unsafeDestination = destination
        let outcome = Mutex<Result<VmSnapshot, SnapshotError>?>(nil)
        let thread = TestThread {
            let result = Result { () throws(SnapshotError) in
                let channel = try endpoint.acceptOne()
                defer { channel.close() }
                return try MigrationReceiver.receive(into: unsafeDestination, over: channel)
            }
            outcome.withLock { $0 = result }
        }
        var channel: MigrationChannel?
        for _ in 0..<200 where channel == nil {
            channel = try? endpoint.connect()
            if channel == nil { usleep(10_000) }
        }
        let report = try MigrationSender.send(source: source, over: try #require(channel))
        channel?.close()
        thread.join()
        #expect(try outcome.withLock { $0! }.get().devices.count == 1)
        #expect(report.pagesPerRound.count >= 2)
        #expect(access(path, F_OK) != 0, "the socket file is removed")
    }
}
