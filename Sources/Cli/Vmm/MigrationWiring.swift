import ActorVmm
import CKvm
import Devices
import EpollLoop
import Glibc
import Synchronization

/// Live migration as the lifecycle sees it (docs/snapshot.md). The blocking socket work runs on a thread of
/// its own (`vmm-migration`), so no event loop waits on the network; what needs the VM — pausing it,
/// capturing or loading state, building the destination's machine — hops back to the machine's control loop
/// or the controller's loop and waits there.

/// Runs `body` on a new thread (`vmm-migration`) and returns its result when it ends. `nonisolated(nonsending)`:
/// the thread is created from the caller's loop (`vmm-main`) and inherits its seccomp filter, not an API loop's.
nonisolated(nonsending) func onMigrationThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        let job = MigrationThreadJob { continuation.resume(returning: body()) }
        var thread = pthread_t()
        let argument = Unmanaged.passRetained(job).toOpaque()
        if pthread_create(&thread, nil, migrationThreadEntry, argument) == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<MigrationThreadJob>.fromOpaque(argument).release()
            job.run()  // no thread to be had: run it here rather than never
        }
    }
}

private final class MigrationThreadJob: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): handed to exactly one thread, which runs it once.
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private func migrationThreadEntry(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    // SAFETY: `argument` is the job retained by `onMigrationThread`; released here, once.
    let job = Unmanaged<MigrationThreadJob>.fromOpaque(argument!).takeRetainedValue()
    _ = ckvm_set_thread_name("vmm-migration")
    job.run()
    return nil
}

/// The running machine as a migration's source.
final class MachineMigrationSource: MigrationSource {
    let machine: Machine
    let config: [UInt8]
    var memory: GuestMemory { machine.vm.memory }

    init(machine: Machine, config: [UInt8]) {
        self.machine = machine
        self.config = config
    }

    func migrationConfig() -> [UInt8] { config }
    var stopReason: String? { machine.stopLatch.stopReason?.description }
    func setDirtyLogging(_ on: Bool) throws(KvmError) { try machine.vm.setDirtyLogging(on) }
    func fetchDirtyPages() throws(KvmError) -> DirtyPages { try machine.vm.fetchDirtyPages() }

    func pauseForMigration() {
        let machine = machine
        blockingWait(on: machine.controlLoop) { await machine.snapshotter.pause() }
    }

    func resumeAfterMigration() {
        let machine = machine
        blockingWait(on: machine.controlLoop) { await machine.snapshotter.resume() }
    }

    func captureForMigration() throws(SnapshotError) -> VmSnapshot {
        let machine = machine, config = config
        return try blockingWait(on: machine.controlLoop) { () async -> Result<VmSnapshot, SnapshotError> in
            do throws(SnapshotError) {
                return .success(try await machine.snapshotter.capture(config: config))
            } catch {
                return .failure(error)
            }
        }.get()
    }
}

extension MachineInstance {
    /// vm.send-migration: migrates the running VM to `endpoint`; on success it stays paused for the
    /// controller to shut down, on failure it runs on.
    nonisolated(nonsending) func sendMigration(to endpoint: MigrationEndpoint, config: [UInt8]) async throws(VmmError) -> MigrationReport {
        let source = MachineMigrationSource(machine: machine, config: config)
        let result = await onMigrationThread { () -> Result<MigrationReport, SnapshotError> in
            Result { () throws(SnapshotError) in
                let channel = try endpoint.connect()
                defer { channel.close() }
                return try MigrationSender.send(source: source, over: channel)
            }
        }
        do throws(SnapshotError) {
            return try result.get()
        } catch {
            throw error.vmmError("cannot migrate the VM", field: "destination_url")
        }
    }
}

/// The destination's side: builds the machine from the config the source sends, loads the state.
final class MachineMigrationDestination: MigrationDestination, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): used by the migration thread only; `machine` is read by the controller
    // after that thread has ended (the continuation orders it).
    let backend: KvmBackend
    let loop: EventLoop
    let onStop: @Sendable (VmStopReason) -> Void
    var config: VmConfig?
    var machine: Machine?
    var stdin: StdinPump?

    init(backend: KvmBackend, loop: EventLoop, onStop: @escaping @Sendable (VmStopReason) -> Void) {
        self.backend = backend
        self.loop = loop
        self.onStop = onStop
    }

    func prepareForMigration(config bytes: [UInt8]) throws(SnapshotError) -> GuestMemory {
        let config: VmConfig
        let prepared: PreparedPayload
        do {
            config = try VmConfig(json: try JsonParser.parse(bytes))
            try config.validate()
            guard let payload = try backend.prepare(config) as? PreparedPayload else { throw SnapshotError.mismatch("no payload") }
            prepared = payload
        } catch {
            throw .mismatch("the source's configuration cannot run here: \(error)")
        }
        let onStop = onStop
        let built = blockingWait(on: loop) { () async -> Result<Machine, SnapshotError> in
            do {
                return .success(try await Machine.build(config: config, prepared: prepared, stopLatch: StopLatch(onStop: onStop)))
            } catch {
                return .failure(.io("cannot create the VM: \(error)"))
            }
        }
        let machine = try built.get()
        self.machine = machine
        self.config = config
        return machine.vm.memory
    }

    func restoreFromMigration(_ snapshot: VmSnapshot) throws(SnapshotError) {
        guard let machine, let config else { throw .io("no machine was built") }
        let result = blockingWait(on: loop) { () async -> Result<StdinPump?, SnapshotError> in
            do throws(SnapshotError) {
                try await machine.snapshotter.restore(snapshot, memoryFrom: nil)
            } catch {
                return .failure(error)
            }
            do {
                let stdin = try await machine.start(serialInput: config.serial == .tty, parked: true)
                await machine.snapshotter.resume()
                return .success(stdin)
            } catch {
                return .failure(.io("cannot start the VM: \(error)"))
            }
        }
        stdin = try result.get()
    }

    func abandonMigration() {
        guard let machine else { return }
        self.machine = nil
        let stdin = stdin
        blockingWait(on: loop) { await machine.teardown(stdin: stdin) }
    }
}
