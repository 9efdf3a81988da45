import ActorVmm
@testable import Cli
import EpollLoop
import Glibc
import Testing

@Suite struct LifecycleTableTests {
    /// The whole table: every action from every state (nil: no VM). A state is where the action leads;
    /// a number is the status that refuses it.
    @Test func everyTransition() {
        enum Outcome: Equatable { case to(VmState?), refused(Int) }
        let table: [VmAction: [VmState?: Outcome]] = [
            .create: [nil: .to(.created), .created: .refused(409), .running: .refused(409), .paused: .refused(409), .shutdown: .refused(409)],
            .boot: [nil: .refused(404), .created: .to(.running), .running: .refused(405), .paused: .refused(405), .shutdown: .to(.running)],
            .pause: [nil: .refused(404), .created: .refused(405), .running: .to(.paused), .paused: .refused(405), .shutdown: .refused(405)],
            .resume: [nil: .refused(404), .created: .refused(405), .running: .refused(405), .paused: .to(.running), .shutdown: .refused(405)],
            .shutdown: [nil: .refused(404), .created: .refused(405), .running: .to(.shutdown), .paused: .to(.shutdown), .shutdown: .refused(405)],
            .reboot: [nil: .refused(404), .created: .refused(405), .running: .to(.running), .paused: .to(.running), .shutdown: .refused(405)],
            .powerButton: [nil: .refused(404), .created: .refused(405), .running: .to(.running), .paused: .to(.paused), .shutdown: .refused(405)],
            .resize: [nil: .refused(404), .created: .refused(405), .running: .to(.running), .paused: .refused(405), .shutdown: .refused(405)],
            .addDevice: [nil: .refused(404), .created: .to(.created), .running: .to(.running), .paused: .refused(405), .shutdown: .to(.shutdown)],
            .removeDevice: [nil: .refused(404), .created: .to(.created), .running: .to(.running), .paused: .refused(405), .shutdown: .to(.shutdown)],
            .delete: [nil: .to(nil), .created: .to(nil), .running: .to(nil), .paused: .to(nil), .shutdown: .to(nil)],
        ]
        let states: [VmState?] = [nil] + VmState.allCases.map { $0 }
        for action in VmAction.allCases {
            for state in states {
                let outcome: Outcome = switch VmLifecycle.next(action, from: state) {
                case .success(let next): .to(next)
                case .failure(let error): .refused(ApiError(error).status.code)  // the router's mapping
                }
                #expect(outcome == table[action]?[state], "\(action) from \(String(describing: state))")
                if case .failure(let error) = VmLifecycle.next(action, from: state) {
                    #expect(error.messages.count == 2 && error.messages[0] == action.failure)
                    if let state { #expect(error.messages[1].contains(state.rawValue), "the message names the state") }
                }
            }
        }
    }
}

/// The controller over a fake backend: transitions, serialisation, failures that leave nothing behind.
@Suite struct ControllerTests {
    struct Fixture {
        let loop: EventLoop
        let backend: FakeBackend
        let exitLatch = StopLatch()
        let controller: VmmController

        init(slowBoot: Duration = .milliseconds(300)) throws {
            loop = try EventLoop(name: "test-vmm")
            backend = FakeBackend(slowBoot: slowBoot)
            controller = VmmController(loop: loop, backend: backend, exitLatch: exitLatch)
        }
    }

    func config(_ kernel: String = "/k") -> VmConfig { VmConfig(payload: .init(kernel: kernel)) }

    func status(_ body: () async throws -> Void) async -> Int {
        do {
            try await body()
            return 200
        } catch let error as VmmError {
            return ApiError(error).status.code
        } catch {
            return -1
        }
    }

    @Test func fullLifecycle() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        let c = f.controller
        #expect(await status { try await c.boot() } == 404)
        try await c.create(config())
        #expect(await c.state == .created)
        #expect(await status { try await c.create(config()) } == 409)
        #expect(await status { try await c.pause() } == 405)
        #expect(await status { _ = try await c.counters() } == 405)
        try await c.boot()
        try await c.pause()
        #expect(await status { try await c.pause() } == 405)
        #expect(await c.state == .paused)
        try await c.resume()
        #expect(try await c.counters().first { $0.id == "fake" }?.counters.first { $0.name == "requests" }?.value == 1)
        try await c.powerButton()
        #expect(await c.state == .running, "pressing the button changes no state; the guest decides")
        try await c.reboot()
        #expect(await c.state == .running)
        try await c.shutdown()
        #expect(await c.state == .shutdown)
        #expect(try await c.info().state == .shutdown)
        try await c.boot()
        try await c.delete()
        #expect(await c.state == nil)
        #expect(await c.config == nil)
        #expect(await status { _ = try await c.info() } == 404)
        try await c.delete()  // nothing to delete is fine, as with Cloud Hypervisor
        #expect(f.backend.events == ["prepare", "boot", "pause", "resume", "power-button", "shutdown", "prepare", "boot", "shutdown",
                                     "prepare", "boot", "shutdown"])
        #expect(f.exitLatch.stopReason == nil, "nothing here exits the VMM")
    }

    @Test func refusedConfigsCreateNothing() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        var withNet = config()
        withNet.net = [.init(mask: "255.0.255.0")]
        do {
            try await f.controller.create(withNet)
            Issue.record("created a VM with a non-contiguous netmask")
        } catch {
            #expect(ApiError(error).status == .badRequest && error.messages.last == "net[0].mask: not a contiguous netmask (ones, then zeros: 255.255.255.0)")
        }
        do {
            try await f.controller.create(config("/missing"))
            Issue.record("created a VM with a missing kernel")
        } catch {
            #expect(error.messages.last == "payload.kernel: cannot read /missing: No such file or directory")
        }
        #expect(await f.controller.state == nil)
        #expect(f.backend.events == ["prepare"], "the unsupported disk was refused before touching the host")
    }

    @Test func failedBootLeavesTheVmCreated() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        try await f.controller.create(config("/boot-fails"))
        do {
            try await f.controller.boot()
            Issue.record("booted")
        } catch {
            #expect(ApiError(error).status == .internalServerError)
            #expect(error.messages == ["cannot boot the VM", "cannot create the VM: KVM_CREATE_VM failed"])
        }
        #expect(await f.controller.state == .created)
    }

    /// A second request waits for the first instead of seeing a half-booted VM.
    @Test func concurrentRequestsTakeTurns() async throws {
        let f = try Fixture(slowBoot: .milliseconds(300))
        defer { f.loop.shutdown() }
        let c = f.controller
        try await c.create(config("/slow"))
        async let booted: Int = status { try await c.boot() }
        try await Task.sleep(for: .milliseconds(50))
        async let paused: Int = status { try await c.pause() }
        #expect(await booted == 200)
        #expect(await paused == 200, "pause waited for the boot to finish")
        #expect(await c.state == .paused)
    }

    /// The interleaving that once lost a waiter: the pause takes its turn-ticket while the boot runs, but
    /// (on an EventLoop, for a task that does not prefer it) registers its continuation only in a later job,
    /// after the boot has already handed its turn on. The pause must go ahead, not wait forever.
    @Test(.timeLimit(.minutes(1))) func aWaiterThatRegistersLateIsNotLost() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        let c = f.controller
        try await c.create(config("/gated"))
        async let booted: Int = status { try await c.boot() }
        #expect(await eventuallyAsync { f.backend.events.last == "boot" }, "the boot holds the turn, parked in the gate")
        f.loop.execute { usleep(300_000) }  // keep the loop busy while the next two jobs queue, in this order:
        f.backend.gate.open()  // 1. the boot's return to the controller (which hops once more before it ends)
        try await Task.sleep(for: .milliseconds(100))
        async let paused: Int = status { try await c.pause() }  // 2. the pause's entry, in that gap
        #expect(await booted == 200)
        #expect(await paused == 200)
        #expect(await c.state == .paused)
    }

    @Test func guestStopTearsDownAndExits() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        try await f.controller.create(config())
        try await f.controller.boot()
        f.backend.lastInstance?.guestStops(.poweredOff)
        #expect(await eventuallyAsync { f.exitLatch.stopReason == .poweredOff })
        #expect(await f.controller.state == .shutdown)
        #expect(f.backend.events.last == "shutdown")
        #expect(await status { try await f.controller.boot() } == 503, "the VMM is on its way out")
    }

    /// A guest reset reboots: the old machine is torn down, a new one boots from the stored config, and the
    /// VMM keeps running (as Cloud Hypervisor does).
    @Test func guestResetReboots() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        try await f.controller.create(config())
        try await f.controller.boot()
        let first = f.backend.lastInstance
        first?.guestStops(.resetRequested(source: "i8042 reset command 0xFE"))
        #expect(await eventuallyAsync { await f.controller.reboots == 1 })
        #expect(f.backend.events.suffix(3) == ["shutdown", "prepare", "boot"])
        #expect(f.backend.lastInstance !== first)
        #expect(await f.controller.state == .running)
        #expect(f.exitLatch.stopReason == nil)
        // The new machine resets too: another reboot; then it powers off: the VMM exits.
        f.backend.lastInstance?.guestStops(.resetRequested(source: "ACPI reset register"))
        #expect(await eventuallyAsync { await f.controller.reboots == 2 })
        f.backend.lastInstance?.guestStops(.poweredOff)
        #expect(await eventuallyAsync { f.exitLatch.stopReason == .poweredOff })
    }

    /// A reset whose reboot fails leaves no VM and exits with one line saying why (exit code 1).
    @Test func resetWhoseRebootFailsExits() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        try await f.controller.create(config())
        try await f.controller.boot()
        f.backend.failBoots.store(true, ordering: .relaxed)
        f.backend.lastInstance?.guestStops(.resetRequested(source: "test"))
        #expect(await eventuallyAsync { f.exitLatch.stopReason != nil })
        let reason = f.exitLatch.stopReason
        #expect(reason?.exitCode == 1)
        #expect(reason?.description.contains("reboot after a guest reset failed") == true, "\(String(describing: reason))")
        #expect(await f.controller.state == .shutdown)
        #expect(await f.controller.reboots == 0)
    }

    /// A stop notification from a machine that a reboot replaced is ignored.
    @Test func staleStopIsIgnored() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        try await f.controller.create(config())
        try await f.controller.boot()
        let first = f.backend.lastInstance
        try await f.controller.reboot()
        first?.guestStops(.resetRequested(source: "late"))
        try await Task.sleep(for: .milliseconds(100))
        #expect(await f.controller.state == .running)
        #expect(f.exitLatch.stopReason == nil)
    }

    @Test func vmmShutdownStopsTheVmAndRefusesMore() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        try await f.controller.create(config())
        try await f.controller.boot()
        try await f.controller.shutdownVmm()
        #expect(await f.controller.state == .shutdown)
        #expect(f.backend.events.last == "shutdown")
        #expect(await status { try await f.controller.delete() } == 503)
    }

    @Test func signalTerminates() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        try await f.controller.create(config())
        try await f.controller.boot()
        await f.controller.terminate(.stopRequested("received SIGTERM"))
        #expect(f.exitLatch.stopReason == .stopRequested("received SIGTERM"))
        #expect(f.backend.events.last == "shutdown")
    }
}
