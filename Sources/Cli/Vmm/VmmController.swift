import ActorVmm
import EpollLoop

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
actor VmmController {
    nonisolated let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    let backend: any VmBackend
    let exitLatch: StopLatch

    private(set) var config: VmConfig?
    private(set) var state: VmState?
    /// Prepared at vm.create, consumed by the first boot.
    private var prepared: (any PreparedVm)?
    private var instance: (any VmInstance)?
    /// Counts boots, so that a stop notification from an earlier machine is recognised and ignored.
    private var generation = 0
    private var exiting = false
    /// Reboots the guest asked for (reset requests), for logs and tests.
    private(set) var reboots = 0
    /// The turn queue of ``exclusive(_:)``: tickets are handed out in arrival order and served in order.
    private var nextTicket = 0
    private var servingTicket = 0
    private var waiters: [Int: CheckedContinuation<Void, Never>] = [:]

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

    /// vm.power-button: needs an ACPI power button (GED device and DSDT), which ActorVMM does not have yet.
    func powerButton() async throws(VmmError) {
        try await exclusive { () throws(VmmError) in
            _ = try transition(.powerButton)
            throw VmmError(.notSupported, VmAction.powerButton.failure,
                           "ActorVMM has no ACPI power button yet (use vm.shutdown to stop the VM)")
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
        guard let config, let state else { throw VmmError(.noVm, "no VM information", "no VM has been created") }
        return VmInfo(config: config, state: state, memoryActualSize: config.memorySize, deviceTree: instance?.deviceTree())
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
        try await exclusive { () throws(VmmError) in
            exiting = true
            await stopInstance()
            if state == .running || state == .paused { state = .shutdown }
        }
    }

    /// A stop signal: stop the VM, then let the process exit with `reason`.
    func terminate(_ reason: VmStopReason) async {
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
    }

    private func stopInstance() async {
        guard let instance else { return }
        self.instance = nil
        await instance.shutdown()
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
