import ActorVmm
import EpollLoop
import Synchronization

/// The VMM's one owner of the VM lifecycle: an actor on its own ``EventLoop`` (`vmm-main`), so that the
/// slow parts of a transition (reading a kernel, creating a KVM VM, joining vCPU threads) never run on the
/// API server's loop or a device loop.
///
/// Every transition is checked against ``VmLifecycle`` and runs *exclusively*: an actor is reentrant at
/// each `await`, so operations take a FIFO turn (``exclusive(_:)``) and a second request waits until the
/// first has finished, instead of seeing a half-made state. A refused transition is a ``VmmError`` and
/// changes nothing; a failed one leaves the previous state and nothing half-created. No HTTP here: the
/// router maps errors to statuses and results to JSON.
///
/// The process exits (``exitLatch``) when the guest stops the VM by itself (power-off, fault: as Cloud
/// Hypervisor does), after vmm.shutdown has been answered, or on SIGINT/SIGTERM/SIGHUP — each time after
/// the VM is torn down. A guest reset reboots the VM instead (a new machine from the stored config, as
/// Cloud Hypervisor does). vm.shutdown stops the VM but keeps the VMM.
actor VmmController: LoopBound {
    nonisolated let loop: EventLoop

    let backend: any VmBackend
    let exitLatch: StopLatch

    private(set) var config: VmConfig?
    private(set) var state: VmState?
    /// Prepared at vm.create, consumed by the first boot.
    private var prepared: (any PreparedVm)?
    private var instance: (any VmInstance)?
    /// Guest RAM after vm.resize added some (nil: the configured size); a new boot starts over.
    private var memoryActual: UInt64?
    /// Counts boots, so that a stop notification from an earlier machine is recognised and ignored.
    private var generation = 0
    private var exiting = false
    /// Reboots the guest asked for (reset requests), for logs and tests.
    private(set) var reboots = 0
    /// The turn queue of ``exclusive(_:)``: tickets are handed out in arrival order and served in order.
    private var nextTicket = 0
    private var servingTicket = 0
    private var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    /// Set when the VMM is to exit, outside the turn queue: a vm.receive-migration waiting for a source
    /// (which holds the turn) stops waiting.
    nonisolated let migrationCancelled = CancelFlag()

    init(loop: EventLoop, backend: any VmBackend, exitLatch: StopLatch) {
        self.loop = loop
        self.backend = backend
        self.exitLatch = exitLatch
    }

    // MARK: - Lifecycle

    /// vm.create: checks and stores `config`. `prepared` skips preparing again (the command line has done it).
    func create(_ config: VmConfig, prepared: (any PreparedVm)? = nil) async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let next = try transition(.create)
            do throws(ConfigError) {
                try config.validate()
            } catch {
                throw VmmError.invalidConfig(error)
            }
            do throws(PrepareError) {
                self.prepared = if let prepared { prepared } else { try backend.prepare(config) }
            } catch {
                throw VmmError.invalidConfig(error.config)
            }
            self.config = config
            state = next
        }
    }

    /// vm.boot: from Created or Shutdown.
    func boot() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let next = try transition(.boot)
            try await startInstance(.boot)
            state = next
        }
    }

    func pause() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let next = try transition(.pause)
            await instance?.pause()
            state = next
        }
    }

    func resume() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let next = try transition(.resume)
            await instance?.resume()
            state = next
        }
    }

    /// vm.shutdown: stops the VM and frees it; the config stays for a later vm.boot.
    func shutdown() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            state = try transition(.shutdown)
            await stopInstance()
        }
    }

    /// vm.reboot: tears the VM down and boots a new one from the stored config (a cold reboot).
    func reboot() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let next = try transition(.reboot)
            await stopInstance()
            state = .shutdown  // if the new boot fails, the VM stays shut down
            try await startInstance(.reboot)
            state = next
        }
    }

    /// vm.power-button: presses the ACPI power button (the GED raises its interrupt; the guest's `_EVT`
    /// notifies `\_SB.PWRB`). The guest decides what follows: Linux with acpid or systemd-logind shuts down
    /// and powers off, and the VM then stops as on any power-off. The state does not change here.
    func powerButton() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            _ = try transition(.powerButton)
            await instance?.powerButton()
        }
    }

    /// vm.resize: vCPUs and RAM of the running VM (docs/hotplug.md). `cpus.boot_vcpus` in vm.info follows
    /// what was asked (a removal completes when the guest ejects the vCPU).
    func resize(_ request: ResizeRequest) async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            _ = try transition(.resize)
            if let vcpus = request.vcpus, let maxVcpus = config?.maxVcpus, !(1...maxVcpus).contains(vcpus) {
                throw VmmError(.badRequest, VmAction.resize.failure, "desired_vcpus \(vcpus): must be 1 to max_vcpus (\(maxVcpus))")
            }
            try await instance?.resize(request)
            if let vcpus = request.vcpus { config?.bootVcpus = vcpus }
            if let ram = request.ram, let current = config {
                if current.virtioMemSize != nil {
                    // Cloud Hypervisor keeps hotplugged_size up to date, so a reboot asks for the same size.
                    config?.hotpluggedSize = ram - current.memorySize
                } else {
                    memoryActual = ram
                }
            }
        }
    }

    /// vm.add-disk / vm.add-net: checks `device` as vm.create would check it in the config (a duplicate id
    /// is 409) and adds it: hot-plugged into the running VM (answers its PCI address), or, before boot or
    /// after a shutdown, to the config only (nil: Cloud Hypervisor's "cold add", 204). The config keeps it
    /// either way, so a reboot has it. A refusal changes nothing.
    func addDevice(_ device: HotplugDevice) async throws(VmmError) -> PciDeviceInfo? {
        try await exclusive { () throws(VmmError) -> PciDeviceInfo? in
            _ = try transition(.addDevice)
            guard let current = config else { throw VmmError(.noVm, device.failure, "no VM has been created") }
            var next = current
            if let id = device.id, next.deviceIDs.contains(id) || instance?.deviceTree().contains(id) == true {
                throw VmmError(.conflict, device.failure, "id \(id) is already the id of another device")
            }
            let entry = device.append(to: &next)
            do throws(ConfigError) {
                try next.validate()
            } catch {
                // The new entry's problems are named by the body's own keys.
                let field = error.field.hasPrefix(entry + ".") ? String(error.field.dropFirst(entry.count + 1)) : error.field
                throw VmmError(.invalidConfig(error), device.failure, "\(field): \(error.message)")
            }
            guard let instance else {
                do throws(PrepareError) {
                    // Opens every backend, so a file that cannot open is refused now. Kept for the first boot
                    // (as vm.create's); after a shutdown the next boot prepares again (no TAP held meanwhile).
                    let fresh = try backend.prepare(next)
                    prepared = state == .created ? fresh : nil
                } catch {
                    throw VmmError(.invalidConfig(error.config), device.failure, error.config.description)
                }
                config = next
                return nil
            }
            let info = try await instance.addDevice(device)
            var stored = current  // with the id the machine gave it, so vm.remove-device finds it there
            _ = device.with(id: info.id).append(to: &stored)
            config = stored
            return info
        }
    }

    /// vm.remove-device: asks the guest to eject device `id` (it goes when the guest has), or before boot
    /// takes it out of the config. Either way the config no longer has it (a reboot does not bring it back).
    func removeDevice(id: String) async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            _ = try transition(.removeDevice)
            let failure = VmAction.removeDevice.failure
            var next = config
            let inConfig = next?.removeDevice(id: id) ?? false
            if let instance {
                try await instance.removeDevice(id: id)
            } else if !inConfig {
                throw VmmError(.notFound, failure, "no device with id \(id)")
            } else {
                prepared = nil  // the next boot prepares the config without it
            }
            config = next
        }
    }

    /// vm.delete: stops the VM if it runs and forgets it. Without a VM it does nothing (as Cloud Hypervisor).
    func delete() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            _ = try transition(.delete)
            await stopInstance()
            (config, state, prepared) = (nil, nil, nil)
        }
    }

    /// vm.info: the config, the state and (when booted) the device tree.
    func info() throws(VmmError) -> VmInfo {
        forgetEjectedDevices()
        guard let config, let state else { throw VmmError(.noVm, "no VM information", "no VM has been created") }
        // With virtio-mem, boot RAM plus what the guest has plugged (Cloud Hypervisor's memory_actual_size).
        let actual = config.virtioMemSize != nil ? config.memorySize + (instance?.virtioMemPluggedSize ?? 0) : memoryActual ?? config.memorySize
        return VmInfo(config: config, state: state, memoryActualSize: actual, deviceTree: instance?.deviceTree())
    }

    /// vm.counters: per-device counters of the booted VM.
    func counters() async throws(VmmError) -> [DeviceCounterSet] {
        try await exclusive { () throws(VmmError) in
            guard let state else { throw VmmError(.noVm, "cannot read the counters", "no VM has been created") }
            guard let instance else {
                throw VmmError(.invalidTransition, "cannot read the counters", "the VM is not booted (state: \(state.rawValue))")
            }
            return await instance.counters()
        }
    }

    // MARK: - Stopping the VMM

    /// vmm.shutdown: stops the VM; the caller exits the process once the answer is sent.
    func shutdownVmm() async throws(VmmError) {
        migrationCancelled.cancel()  // a vm.receive-migration waiting for its source gives up
        try await exclusive { () throws(VmmError) in
            exiting = true
            await stopInstance()
            if state == .running || state == .paused { state = .shutdown }
        }
    }

    /// A stop signal: stop the VM, then let the process exit with `reason`.
    func terminate(_ reason: VmStopReason) async {
        migrationCancelled.cancel()
        _ = try? await exclusive { () throws(VmmError) in
            exiting = true
            await stopInstance()
        }
        exitLatch.requestStop(reason)
    }

    /// The guest stopped machine `stoppedGeneration` by itself. A reset request (i8042 0xFE, the ACPI reset
    /// register, a KVM reset event) reboots: a new machine from the stored config, as vm.reboot does and as
    /// Cloud Hypervisor does. Anything else (power-off, a fault) tears the VM down and exits with `reason`;
    /// so does a reset whose reboot fails.
    func vmStopped(generation stoppedGeneration: Int, reason: VmStopReason) async {
        let exitReason = try? await exclusive { () throws(VmmError) -> VmStopReason? in
            guard stoppedGeneration == generation, instance != nil else { return nil }
            if case .resetRequested(let source) = reason, !exiting {
                Log.info("guest requested a reset (\(source)): rebooting")
                await stopInstance()
                do throws(VmmError) {
                    try await startInstance(.reboot)
                    reboots += 1
                    return nil
                } catch {
                    exiting = true
                    state = .shutdown
                    return .hostError("reboot after a guest reset failed: \(error.messages.dropFirst().joined(separator: ": "))")
                }
            }
            exiting = true
            await stopInstance()
            state = .shutdown
            return reason
        }
        if let exitReason = exitReason ?? nil { exitLatch.requestStop(exitReason) }
    }

    // MARK: - Internals

    /// Checks `action` against the state machine (and refuses everything once the VMM is exiting).
    private func transition(_ action: VmAction) throws(VmmError) -> VmState? {
        guard !exiting else { throw VmmError(.shuttingDown, action.failure, "the VMM is shutting down") }
        return try VmLifecycle.next(action, from: state).get()
    }

    /// Prepares (unless vm.create did) and boots a machine from the stored config.
    private func startInstance(_ action: VmAction) async throws(VmmError) {
        guard let config else { throw VmmError(.noVm, action.failure, "no VM has been created") }
        let payload: any PreparedVm
        do throws(PrepareError) {
            payload = if let prepared { prepared } else { try backend.prepare(config) }
        } catch {
            throw VmmError.invalidConfig(error.config, action.failure)
        }
        prepared = nil
        generation += 1
        let bootGeneration = generation
        do throws(BootFailure) {
            instance = try await backend.boot(config, payload) { [self] reason in
                Task(executorPreference: loop) { await self.vmStopped(generation: bootGeneration, reason: reason) }
            }
        } catch {
            throw VmmError(.hostFault, action.failure, error.message)
        }
        // The ids the machine generated go into the config, as Cloud Hypervisor's: vm.info shows them,
        // vm.remove-device finds the device there, and a reboot keeps them.
        if let instance { self.config?.assignIDs(instance.virtioDeviceIDs) }
    }

    private func stopInstance() async {
        guard let instance else { return }
        forgetEjectedDevices()
        self.instance = nil
        memoryActual = nil
        await instance.shutdown()
    }

    /// The config forgets the devices the guest ejected by itself (docs/hotplug.md): before it is shown,
    /// snapshotted or booted again.
    private func forgetEjectedDevices() {
        guard let instance, var current = config else { return }
        let gone = current.dropDevices(notIn: instance.virtioDeviceIDs)
        guard !gone.isEmpty else { return }
        config = current
        Log.info("the guest ejected \(gone.joined(separator: ", ")): removed from the VM's config")
    }

    /// Runs `body` when no other lifecycle operation is running; operations take turns in arrival order.
    ///
    /// The ticket is taken before any suspension. Waiting must not assume that the continuation is registered
    /// in the same executor job as the check before it: on an `EventLoop`, a task that does not prefer that
    /// loop as its task executor is re-enqueued at `withCheckedContinuation`, so the operation ahead may
    /// finish in between. Hence the second check inside: if our turn came meanwhile, go on at once.
    private func exclusive<T>(_ body: () async throws(VmmError) -> T) async throws(VmmError) -> T {
        let ticket = nextTicket
        nextTicket += 1
        if ticket != servingTicket {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                if ticket == servingTicket { continuation.resume() } else { waiters[ticket] = continuation }
            }
        }
        defer {
            servingTicket += 1
            waiters.removeValue(forKey: servingTicket)?.resume()
        }
        return try await body()
    }
}

// MARK: - Snapshot and restore (docs/snapshot.md)

extension VmmController {
    /// vm.snapshot: writes the paused VM's state and memory into the `file://` directory.
    func snapshot(destinationURL: String) async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let failure = "cannot snapshot the VM"
            forgetEjectedDevices()
            guard let config, let state else { throw VmmError(.noVm, failure, "no VM has been created") }
            guard state == .paused, let instance else {
                throw VmmError(.invalidTransition, failure, "the VM must be paused first (state: \(state.rawValue))")
            }
            let directory: String
            do throws(SnapshotError) {
                directory = try VmSnapshot.directory(fromURL: destinationURL)
            } catch {
                throw error.vmmError(failure, field: "destination_url")
            }
            try await instance.snapshot(to: directory, config: Array(config.json.serialized().utf8))
            Log.info("snapshot written to \(directory)")
        }
    }

    /// vm.restore (and `--restore`): a new VM from the snapshot in the `file://` directory, paused, or running
    /// if `resume`. Only when there is no VM; a bad snapshot is refused before anything is built.
    func restore(sourceURL: String, resume: Bool) async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let failure = "cannot restore the VM"
            guard !exiting else { throw VmmError(.shuttingDown, failure, "the VMM is shutting down") }
            if let state { throw VmmError(.vmExists, failure, "a VM already exists (state: \(state.rawValue)); delete it first") }
            let snapshot: VmSnapshot, directory: String
            do throws(SnapshotError) {
                directory = try VmSnapshot.directory(fromURL: sourceURL)
                snapshot = try VmSnapshot.read(from: directory)
            } catch {
                // Missing, unreadable or bad: the user's snapshot, not the host, is at fault.
                throw VmmError.invalidConfig(ConfigError(field: "source_url", error.description), failure)
            }
            let config: VmConfig
            do {
                config = try VmConfig(json: try JsonParser.parse(snapshot.config))
                try config.validate()
            } catch let error as ConfigError {
                throw VmmError.invalidConfig(error, failure)
            } catch {
                throw VmmError.invalidConfig(ConfigError(field: "source_url", "the snapshot's config is not JSON: \(error)"), failure)
            }
            guard snapshot.vcpus.count == config.bootVcpus else {
                throw VmmError.invalidConfig(ConfigError(field: "source_url", "the snapshot has \(snapshot.vcpus.count) vCPU state(s) for \(config.bootVcpus) vCPU(s)"), failure)
            }
            let payload: any PreparedVm
            do throws(PrepareError) {
                payload = try backend.prepare(config)
            } catch {
                throw VmmError.invalidConfig(error.config, failure)
            }
            generation += 1
            let bootGeneration = generation
            instance = try await backend.restore(config, payload, snapshot: snapshot, directory: directory, resume: resume) { [self] reason in
                Task(executorPreference: loop) { await self.vmStopped(generation: bootGeneration, reason: reason) }
            }
            self.config = config
            state = resume ? .running : .paused
            Log.info("VM restored from \(directory) (\(resume ? "running" : "paused"))")
        }
    }
}

// MARK: - Live migration (docs/snapshot.md)

extension VmmController {
    /// vm.send-migration: migrates the running VM to the `unix:`/`tcp:` destination, then shuts it down here
    /// (it runs there now). If the migration fails the VM runs on here, unharmed.
    func sendMigration(destinationURL: String) async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let failure = "cannot migrate the VM"
            guard let config, let state else { throw VmmError(.noVm, failure, "no VM has been created") }
            guard state == .running, let instance = instance as? MachineInstance else {
                throw VmmError(.invalidTransition, failure, "the VM must be running (state: \(state.rawValue))")
            }
            let endpoint: MigrationEndpoint
            do throws(SnapshotError) {
                endpoint = try MigrationEndpoint(url: destinationURL)
            } catch {
                throw VmmError.invalidConfig(ConfigError(field: "destination_url", error.description), failure)
            }
            let report = try await instance.sendMigration(to: endpoint, config: Array(config.json.serialized().utf8))
            Log.info("VM migrated to \(endpoint): \(report)")
            await stopInstance()
            self.state = .shutdown
        }
    }

    /// vm.receive-migration: waits on the `unix:`/`tcp:` URL for one source, builds the VM from its config,
    /// loads its memory and state, and runs it. Only when there is no VM; on failure nothing is left.
    func receiveMigration(receiverURL: String) async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            let failure = "cannot receive the migration"
            guard !exiting else { throw VmmError(.shuttingDown, failure, "the VMM is shutting down") }
            if let state { throw VmmError(.vmExists, failure, "a VM already exists (state: \(state.rawValue)); delete it first") }
            let endpoint: MigrationEndpoint
            do throws(SnapshotError) {
                endpoint = try MigrationEndpoint(url: receiverURL)
            } catch {
                throw VmmError.invalidConfig(ConfigError(field: "receiver_url", error.description), failure)
            }
            guard let kvm = backend as? KvmBackend else { throw VmmError(.notSupported, failure, "this backend cannot migrate") }
            generation += 1
            let bootGeneration = generation
            let destination = MachineMigrationDestination(backend: kvm, loop: loop) { [self] reason in
                Task(executorPreference: loop) { await self.vmStopped(generation: bootGeneration, reason: reason) }
            }
            let cancelled = migrationCancelled
            let result = await onMigrationThread { () -> Result<VmSnapshot, SnapshotError> in
                Result { () throws(SnapshotError) in
                    let channel = try endpoint.acceptOne { cancelled.isCancelled }
                    defer { channel.close() }
                    return try MigrationReceiver.receive(into: destination, over: channel)
                }
            }
            do throws(SnapshotError) {
                _ = try result.get()
            } catch {
                throw VmmError(.hostFault, failure, error.description)
            }
            guard let machine = destination.machine, let config = destination.config else {
                throw VmmError(.hostFault, failure, "the migration ended without a VM")
            }
            instance = MachineInstance(machine: machine, stdin: destination.stdin)
            self.config = config
            state = .running
            Log.info("VM received from \(endpoint)")
        }
    }
}

/// A flag set once, read from any thread.
final class CancelFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func cancel() { value.store(true, ordering: .relaxed) }
    var isCancelled: Bool { value.load(ordering: .relaxed) }
}
