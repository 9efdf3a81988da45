import ActorVmm
@testable import Cli
import EpollLoop
import Glibc
import Synchronization

/// A ``VmBackend`` without KVM, recording what the lifecycle asks of it. Kernel paths steer it:
/// a kernel named "/missing" fails preparation (as a missing file would), "/boot-fails" fails to boot,
/// and "/slow" takes `slowBoot` to boot.
final class FakeBackend: VmBackend {
    let log = Mutex<[String]>([])
    let instances = Mutex<[FakeInstance]>([])
    let slowBoot: Duration

    init(slowBoot: Duration = .milliseconds(300)) { self.slowBoot = slowBoot }

    var events: [String] { log.withLock { $0 } }
    var lastInstance: FakeInstance? { instances.withLock { $0.last } }

    struct Prepared: PreparedVm { let kernel: String }

    func prepare(_ config: VmConfig) throws(PrepareError) -> any PreparedVm {
        log.withLock { $0.append("prepare") }
        if config.payload.kernel == "/missing" {
            throw PrepareError(config: ConfigError(field: "payload.kernel", "cannot read /missing: No such file or directory"),
                               cli: "--kernel /missing: cannot read: No such file or directory")
        }
        return Prepared(kernel: config.payload.kernel)
    }

    func boot(_ config: VmConfig, _ prepared: any PreparedVm,
              onStop: @escaping @Sendable (VmStopReason) -> Void) async throws(BootFailure) -> any VmInstance {
        log.withLock { $0.append("boot") }
        if config.payload.kernel == "/boot-fails" { throw BootFailure("cannot create the VM: KVM_CREATE_VM failed") }
        if config.payload.kernel == "/slow" { try? await Task.sleep(for: slowBoot) }
        let instance = FakeInstance(backend: self, onStop: onStop)
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

    func pause() async { backend.log.withLock { $0.append("pause") } }
    func resume() async { backend.log.withLock { $0.append("resume") } }
    func shutdown() async {
        if !down.exchange(true, ordering: .relaxed) { backend.log.withLock { $0.append("shutdown") } }
    }
    func counters() async -> JsonValue {
        .object(["fake": .object(["requests": .int(requests.add(1, ordering: .relaxed).newValue), "bytes": .int(0),
                                  "errors": .int(0), "interrupts": .int(0)])])
    }
    func deviceTree() -> JsonValue { .object(["fake": .object(["id": .string("fake")])]) }

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
