import CKvm
import EpollLoop
import Glibc
import Synchronization

/// Owns the vCPU threads: starts them, pauses and resumes them, and stops and joins them.
///
/// An actor on its own ``EventLoop``. Each vCPU runs `KVM_RUN` on a dedicated pthread; the manager talks to
/// a running thread only through its ``Vcpu/requested`` state and a kick (`immediate_exit` + a signal that
/// interrupts `KVM_RUN`), never by touching the thread's `kvm_run` page otherwise.
public actor VcpuManager: LoopBound {
    /// Its executor (``LoopBound``).
    public nonisolated let loop: EventLoop

    /// The present vCPUs' contexts in id order. Behind a mutex because the counters below are read from any
    /// thread while a hotplug adds or removes a vCPU; the vCPU threads never touch it.
    let registry: Mutex<[VcpuThreadContext]>
    /// The running threads by vCPU id.
    var threads: [Int: pthread_t] = [:]
    /// vCPUs removed at run time. KVM cannot destroy a vCPU (its id stays taken until the VM goes), so the
    /// descriptor and `kvm_run` mapping are kept, and adding the same id again reuses them, as Cloud
    /// Hypervisor does.
    var removed: [Int: Vcpu] = [:]
    public internal(set) var state: VcpuRunState = .paused  // not started yet counts as paused
    /// What every vCPU thread dispatches on; ``publishBuses(_:)`` replaces it at run time.
    public nonisolated let busCell: BusSnapshotCell
    let stopLatch: StopLatch
    let strategy: HandoffStrategy

    /// Host compatibility mode's instruction emulator (docs/compat.md), or nil when the mode is off.
    public nonisolated let emulator: InstructionEmulator?

    /// `threadOptions[i]` applies to `vcpus[i]` (pinning, exit recording); missing entries mean defaults.
    /// `emulator` turns compatibility mode on: an emulation failure of the host's instruction emulator
    /// (`KVM_EXIT_INTERNAL_ERROR`, suberror 1) goes to it instead of stopping the VM.
    public init(loop: EventLoop, vcpus: [Vcpu], buses: IoBuses, stopLatch: StopLatch,
                strategy: HandoffStrategy = .inlineIfIdle, threadOptions: [VcpuThreadOptions] = [],
                emulator: InstructionEmulator? = nil) {
        self.loop = loop
        self.emulator = emulator
        let busCell = BusSnapshotCell(buses)
        self.busCell = busCell
        self.stopLatch = stopLatch
        self.strategy = strategy
        registry = Mutex(vcpus.enumerated().map { index, vcpu in
            VcpuThreadContext(vcpu: vcpu, busCell: busCell, handoff: ExitHandoff(strategy: strategy), stopLatch: stopLatch,
                              options: index < threadOptions.count ? threadOptions[index] : VcpuThreadOptions(),
                              emulator: emulator)
        })
    }

    /// True when compatibility mode's instruction emulation is on.
    public nonisolated var compatibilityMode: Bool { emulator != nil }

    var contexts: [VcpuThreadContext] { registry.withLock { $0 } }

    /// The ids of the present vCPUs, in order.
    public nonisolated var vcpuIDs: [Int] { registry.withLock { $0.map(\.vcpu.id) } }

    /// Starts one thread per vCPU (named `vcpu<N>`).
    public func start() throws(Errno) {
        precondition(threads.isEmpty, "vCPUs already started")
        installKickHandler()
        for context in contexts {
            do {
                try startThread(context)
            } catch {
                stopThreads()
                throw error
            }
        }
        state = .running
    }

    private func startThread(_ context: VcpuThreadContext) throws(Errno) {
        var thread = pthread_t()
        let argument = Unmanaged.passRetained(context).toOpaque()
        let result = pthread_create(&thread, nil, vcpuThreadEntry, argument)
        guard result == 0 else {
            Unmanaged<VcpuThreadContext>.fromOpaque(argument).release()
            throw Errno(rawValue: result)
        }
        threads[context.vcpu.id] = thread
    }

    /// Takes every vCPU out of the guest and parks it; returns once all are parked. A pending PIO/MMIO
    /// access is completed first (KVM finishes it when re-entered with `immediate_exit` set).
    public func pause() {
        guard state == .running else { return }
        let running = contexts
        for context in running {
            if let thread = threads[context.vcpu.id] { context.request(.paused, thread: thread) }
        }
        // A thread that has exited (the VM is stopping) acknowledges once on its way out.
        for context in running where !context.exited.load(ordering: .acquiring) { context.pausedAck.wait() }
        state = .paused
    }

    /// Lets parked vCPUs run again.
    public func resume() {
        guard state == .paused, !threads.isEmpty else { return }
        for context in contexts {
            context.vcpu.requested.store(VcpuRunState.running.rawValue, ordering: .sequentiallyConsistent)
            context.resumeParker.signal()
        }
        state = .running
    }

    /// Stops and joins every vCPU thread. Idempotent.
    public func stop() {
        stopThreads()
        state = .stopped
    }

    private func stopThreads() {
        let running = contexts
        for context in running {
            guard let thread = threads[context.vcpu.id] else { continue }
            context.request(.stopped, thread: thread)
            context.resumeParker.signal()  // in case it is parked
        }
        for context in running {
            if let thread = threads[context.vcpu.id] { pthread_join(thread, nil) }
        }
        threads.removeAll()
    }

    // MARK: Hotplug

    /// A vCPU removed earlier with id `id`, for ``add(_:options:)`` to run again; nil if there is none (then
    /// the caller creates one with `Vm.createVcpu(id:)` and configures it).
    public func takeRemovedVcpu(id: Int) -> Vcpu? { removed.removeValue(forKey: id) }

    /// Adds `vcpu` at run time and, if the vCPUs are running, starts its thread. A new vCPU waits for the
    /// guest's INIT/SIPI like any application processor. Refused while the vCPUs are paused or stopped
    /// (the thread would have nobody to park it), and for an id already present.
    public func add(_ vcpu: Vcpu, options: VcpuThreadOptions = VcpuThreadOptions()) throws(VcpuHotplugError) {
        guard state == .running else { throw .notRunning }
        guard !vcpuIDs.contains(vcpu.id) else { throw .present(vcpu.id) }
        vcpu.requested.store(VcpuRunState.running.rawValue, ordering: .sequentiallyConsistent)
        let context = VcpuThreadContext(vcpu: vcpu, busCell: busCell, handoff: ExitHandoff(strategy: strategy),
                                        stopLatch: stopLatch, options: options, emulator: emulator)
        do {
            try startThread(context)
        } catch {
            throw .thread(error)
        }
        registry.withLock { all in
            all.append(context)
            all.sort { $0.vcpu.id < $1.vcpu.id }
        }
    }

    /// Stops and joins vCPU `id`'s thread (the guest has ejected it) and keeps the vCPU for a later
    /// ``takeRemovedVcpu(id:)``. vCPU 0 cannot be removed.
    public func remove(id: Int) throws(VcpuHotplugError) {
        guard id != 0 else { throw .bootVcpu }
        guard let context = contexts.first(where: { $0.vcpu.id == id }) else { throw .absent(id) }
        if let thread = threads.removeValue(forKey: id) {
            context.request(.stopped, thread: thread)
            context.resumeParker.signal()
            pthread_join(thread, nil)
        }
        registry.withLock { $0.removeAll { $0.vcpu.id == id } }
        removed[id] = context.vcpu
    }

    // MARK: Bus swaps

    /// Makes `buses` what every vCPU dispatches its next exits on (one atomic store; does not wait).
    public nonisolated func publishBuses(_ buses: IoBuses) { busCell.publish(buses) }

    /// Returns once no vCPU thread can still be dispatching an exit on a bus snapshot older than the last
    /// published one (a detached device then gets no more accesses). Blocks the calling thread for at most
    /// the exits in progress; must not run on a device loop (an exit's dispatch may wait for it).
    public nonisolated func waitForBusQuiescence() {
        busCell.waitForQuiescence(of: registry.withLock { $0.map(\.busReader) })
    }

    /// Number of exits each vCPU has handled (for tests and counters).
    public nonisolated func exitCounts() -> [Int] { registry.withLock { $0.map { $0.exits.load(ordering: .relaxed) } } }

    /// KVM's statistics for each vCPU (exits by kind, host-emulated instructions, injected interrupts), or
    /// why they cannot be read.
    public nonisolated func kvmStats() -> [Result<KvmStats, KvmStatsError>] {
        registry.withLock { $0 }.map { context in Result { () throws(KvmStatsError) in try context.vcpu.kvmStats() } }
    }

    /// Number of accesses each vCPU handed to a device loop instead of handling inline (the loop was busy,
    /// or the strategy is not inline-if-idle).
    public nonisolated func slowPathCounts() -> [Int] {
        registry.withLock { $0.map { $0.handoff.slowPathAccesses.load(ordering: .relaxed) } }
    }
}

/// Why a vCPU could not be added or removed at run time.
public enum VcpuHotplugError: Error, Equatable, Sendable, CustomStringConvertible {
    case notRunning
    case present(Int)
    case absent(Int)
    case bootVcpu
    case thread(Errno)

    public var description: String {
        switch self {
        case .notRunning: "vCPUs can be added only while the VM runs"
        case .present(let id): "vCPU \(id) is already present"
        case .absent(let id): "vCPU \(id) is not present"
        case .bootVcpu: "vCPU 0 cannot be removed"
        case .thread(let error): "cannot start the vCPU thread: \(error)"
        }
    }
}
