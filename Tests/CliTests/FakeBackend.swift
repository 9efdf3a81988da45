import ActorVmm
@testable import Cli
import EpollLoop
import Glibc
import Synchronization

/// A ``VmBackend`` without KVM, recording what the lifecycle asks of it. Kernel paths steer it:
/// a kernel named "/missing" fails preparation (as a missing file would), "/boot-fails" fails to boot,
/// "/slow" takes `slowBoot` to boot, and "/gated" boots when the test opens `gate`.
final class FakeBackend: VmBackend {
    let log = Mutex<[String]>([])
    let instances = Mutex<[FakeInstance]>([])
    let slowBoot: Duration
    let gate = Gate()
    /// When set, every call is checked to run on this loop (the controller's); `offLoopCalls` counts misses.
    let controllerLoop = Mutex<EventLoop?>(nil)
    let offLoopCalls = Atomic<Int>(0)
    /// When set, every boot from then on fails (as a kernel deleted between boots would).
    let failBoots = Atomic<Bool>(false)

    init(slowBoot: Duration = .milliseconds(300)) { self.slowBoot = slowBoot }

    var events: [String] { log.withLock { $0 } }

    func record(_ event: String) {
        log.withLock { $0.append(event) }
        if let loop = controllerLoop.withLock({ $0 }), !loop.inLoopThread { offLoopCalls.add(1, ordering: .relaxed) }
    }
    var lastInstance: FakeInstance? { instances.withLock { $0.last } }

    struct Prepared: PreparedVm { let kernel: String }

    func prepare(_ config: VmConfig) throws(PrepareError) -> any PreparedVm {
        record("prepare")
        if let disk = config.disks.firstIndex(where: { $0.path == "/missing-disk" }) {
            throw PrepareError(config: ConfigError(field: "disks[\(disk)].path", "/missing-disk: No such file or directory"), cli: "--disk path=/missing-disk")
        }
        if config.payload.kernel == "/missing" {
            throw PrepareError(config: ConfigError(field: "payload.kernel", "cannot read /missing: No such file or directory"),
                               cli: "--kernel /missing: cannot read: No such file or directory")
        }
        return Prepared(kernel: config.payload.kernel)
    }

    nonisolated(nonsending) func boot(_ config: VmConfig, _ prepared: any PreparedVm,
                                      onStop: @escaping @Sendable (VmStopReason) -> Void) async throws(BootFailure) -> any VmInstance {
        record("boot")
        if config.payload.kernel == "/boot-fails" || failBoots.load(ordering: .relaxed) { throw BootFailure("cannot create the VM: KVM_CREATE_VM failed") }
        if config.payload.kernel == "/slow" { try? await Task.sleep(for: slowBoot) }
        if config.payload.kernel == "/gated" { await gate.wait() }
        let instance = FakeInstance(backend: self, onStop: onStop)
        // Ids as the device manager generates them: one counter, disks then net devices.
        instance.virtioIDs.withLock { ids in
            ids = config.disks.enumerated().map { $1.id ?? "_disk\($0)" }
                + config.net.enumerated().map { $1.id ?? "_net\(config.disks.count + $0)" }
        }
        instances.withLock { $0.append(instance) }
        return instance
    }
}

final class FakeInstance: VmInstance {
    let backend: FakeBackend
    let onStop: @Sendable (VmStopReason) -> Void
    let requests = Atomic<UInt64>(0)
    let down = Atomic<Bool>(false)

    init(backend: FakeBackend, onStop: @escaping @Sendable (VmStopReason) -> Void) {
        self.backend = backend
        self.onStop = onStop
    }

    nonisolated(nonsending) func pause() async { backend.record("pause") }
    nonisolated(nonsending) func resume() async { backend.record("resume") }
    nonisolated(nonsending) func powerButton() async { backend.record("power-button") }
    nonisolated(nonsending) func resize(_ request: ResizeRequest) async throws(VmmError) {
        backend.record("resize \(request.vcpus.map(String.init) ?? "-") \(request.ram.map(String.init) ?? "-")")
    }
    let virtioIDs = Mutex<[String]>([])
    var virtioDeviceIDs: [String] { virtioIDs.withLock { $0 } }
    /// Hot-adds in slot 5 and up; a disk at /missing-disk cannot open (as the real instance answers).
    let slots = Mutex<[String: Int]>([:])
    nonisolated(nonsending) func addDevice(_ device: HotplugDevice) async throws(VmmError) -> PciDeviceInfo {
        if case .disk(let disk) = device, disk.path == "/missing-disk" {
            throw VmmError.invalidConfig(ConfigError(field: "path", "/missing-disk: No such file or directory"), device.failure)
        }
        let id = device.id ?? "\(device.idPrefix)\(slots.withLock { $0.count })"
        let slot = slots.withLock { slots in
            slots[id] = 5 + slots.count
            return slots[id]!
        }
        virtioIDs.withLock { $0.append(id) }  // as the real machine's: boot and hot-added devices alike
        backend.record("add-device \(id)")
        return PciDeviceInfo(id: id, bdf: PciBdf(device: UInt8(slot)))
    }
    nonisolated(nonsending) func removeDevice(id: String) async throws(VmmError) {
        let boot = virtioIDs.withLock { ids in ids.firstIndex(of: id).map { ids.remove(at: $0) } } != nil
        guard slots.withLock({ $0.removeValue(forKey: id) }) != nil || boot else {
            throw VmmError(.notFound, VmAction.removeDevice.failure, "no device with id \(id)")
        }
        backend.record("remove-device \(id)")
    }
    nonisolated(nonsending) func shutdown() async {
        if !down.exchange(true, ordering: .relaxed) { backend.record("shutdown") }
    }
    nonisolated(nonsending) func counters() async -> [DeviceCounterSet] {
        [DeviceCounterSet(id: "fake", counters: [("requests", requests.add(1, ordering: .relaxed).newValue), ("bytes", 0),
                                                 ("errors", 0), ("interrupts", 0)])]
    }
    func deviceTree() -> DeviceTree {
        var tree = DeviceTree()
        tree.insert(DeviceNode(id: "fake"))
        return tree
    }

    /// The guest stops the VM by itself.
    func guestStops(_ reason: VmStopReason) { onStop(reason) }
}

/// Polls `condition` for up to `seconds`.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
    while !condition() {
        if monotonicNanoseconds() > deadline { return false }
        usleep(2000)
    }
    return true
}

/// Polls `condition` for up to `seconds` without blocking a concurrency thread.
func eventuallyAsync(_ seconds: Double = 5, _ condition: () async -> Bool) async -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
    while !(await condition()) {
        if monotonicNanoseconds() > deadline { return false }
        try? await Task.sleep(for: .milliseconds(2))
    }
    return true
}

/// A one-shot gate: `wait()` returns once `open()` has been called.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    func open() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.open = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}
