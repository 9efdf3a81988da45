import CKvm
import EpollLoop
import Glibc
import Synchronization

// A vCPU thread: its context shared with the VcpuManager, its run loop (KVM_RUN, exits handed to the
// devices: docs/architecture.md, "The exit hand-off") and the kick signal that interrupts KVM_RUN.

/// Everything one vCPU thread needs. Shared between the thread and the manager.
final class VcpuThreadContext: Sendable {
    let vcpu: Vcpu
    /// The buses, replaceable at run time; `busReader` tells the cell when this thread is inside an exit.
    let busCell: BusSnapshotCell
    let busReader = BusReader()
    let handoff: ExitHandoff
    let stopLatch: StopLatch
    let options: VcpuThreadOptions
    let pausedAck = ThreadParker()
    let resumeParker = ThreadParker()
    let emulator: InstructionEmulator?
    let exits = Atomic<Int>(0)
    let exited = Atomic<Bool>(false)

    init(vcpu: Vcpu, busCell: BusSnapshotCell, handoff: ExitHandoff, stopLatch: StopLatch, options: VcpuThreadOptions,
         emulator: InstructionEmulator? = nil) {
        self.vcpu = vcpu; self.busCell = busCell; self.handoff = handoff; self.stopLatch = stopLatch
        self.options = options
        self.emulator = emulator
        options.recorder?.attach()
    }

    /// Asks the thread to change state and kicks it out of `KVM_RUN`: state first, then `immediate_exit`,
    /// then the signal, so whichever the thread sees first leads it to read the new state.
    func request(_ state: VcpuRunState, thread: pthread_t) {
        vcpu.requested.store(state.rawValue, ordering: .sequentiallyConsistent)
        vcpu.setImmediateExit(true)
        pthread_kill(thread, ckvm_sigrtmin())
    }

    /// The vCPU thread's loop.
    func runLoop() {
        let name = "vcpu\(vcpu.id)"
        _ = ckvm_set_thread_name(name)
        unblockKickSignal()
        if let cpu = options.cpu {
            do { try pinCurrentThread(to: cpu) } catch { Log.warning("cannot pin \(name) to CPU \(cpu): \(error)") }
        }
        options.onStart?()
        // Out of KVM_RUN for good, whichever way: where the guest was (a stalled boot shows here at -v).
        defer { Log.info("vcpu\(vcpu.id) stopped: \(vcpu.stateSummary())") }
        // Benchmarks only: nil in actor-vmm, so each exit pays one nil check (see ExitRecorder).
        let recorder = options.recorder
        var ran = false
        while true {
            switch VcpuRunState(rawValue: vcpu.requested.load(ordering: .sequentiallyConsistent)) ?? .stopped {
            case .stopped:
                return
            case .paused:
                // KVM finishes an exit's I/O (an IN's data into RAX, RIP past the OUT or IN) only when KVM_RUN
                // is entered again: do that now, with immediate_exit set so the guest does not run, so a
                // parked vCPU's state is complete (a snapshot taken now would otherwise replay the
                // instruction: an OUT's byte twice). The KVM API documentation asks for this before saving
                // state. (On kvm_pvm the guest may run a few instructions on; an exit it makes then is not
                // handled: docs/snapshot.md.)
                if ran { completePendingIo() }
                pausedAck.signal()
                resumeParker.wait()
                continue
            case .running:
                break
            }
            let result = ckvm_ioctl(vcpu.fd, CKVM_RUN)
            ran = true
            let exitTSC = recorder == nil ? 0 : ckvm_rdtsc()
            if result < 0 {
                let error = Errno.current
                if error == .interrupted || error == .wouldBlock {
                    vcpu.setImmediateExit(false)
                    continue
                }
                stopLatch.requestStop(.hostError("KVM_RUN on vcpu\(vcpu.id) failed: \(error)"))
                return
            }
            exits.add(1, ordering: .relaxed)
            // The bus snapshot is read per exit, unretained, between enter and leave (BusSnapshotCell):
            // no lock, no allocation, and a device being detached waits until this exit is done.
            busReader.enter()
            let outcome = busCell.currentUnretained._withUnsafeGuaranteedRef { snapshot in
                handleExit(vcpu.run, runSize: vcpu.runSize, buses: snapshot.buses, handoff: handoff,
                           rip: { vcpu.currentRIP() })
            }
            busReader.leave()
            recorder?.record(exitTSC: exitTSC, doneTSC: ckvm_rdtsc(), run: vcpu.run)
            if case .stop(var reason) = outcome {
                // Only stops reach here, so the normal path pays nothing for compatibility mode.
                if let emulator, InstructionEmulator.isEmulationFailure(vcpu.run) {
                    switch emulator.handleEmulationFailure(on: vcpu) {
                    case .resume: continue
                    case .stop(let why): reason = why
                    }
                }
                stopLatch.requestStop(reason)
                return
            }
        }
    }
}

extension VcpuThreadContext {
    /// `KVM_RUN` with `immediate_exit` set: KVM completes the last exit's I/O and returns at once (EINTR)
    /// without running the guest.
    func completePendingIo() {
        vcpu.setImmediateExit(true)
        _ = ckvm_ioctl(vcpu.fd, CKVM_RUN)
        vcpu.setImmediateExit(false)
    }
}

func vcpuThreadEntry(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    // SAFETY: `argument` is the context retained by `VcpuManager.start`; released here when the thread ends.
    let context = Unmanaged<VcpuThreadContext>.fromOpaque(argument!).takeRetainedValue()
    context.runLoop()
    context.exited.store(true, ordering: .releasing)
    context.pausedAck.signal()
    return nil
}

/// The kick signal's handler does nothing: its only job is to make `KVM_RUN` return with EINTR.
private func vcpuKickHandler(_: Int32) {}

func installKickHandler() {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = vcpuKickHandler
    sigemptyset(&action.sa_mask)
    action.sa_flags = 0  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(ckvm_sigrtmin(), &action, nil)
}

func unblockKickSignal() {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, ckvm_sigrtmin())
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}
