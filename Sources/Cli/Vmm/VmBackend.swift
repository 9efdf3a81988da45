import ActorVmm

/// What the lifecycle needs from the machinery that runs VMs: the real one (``KvmBackend``) or, in the
/// unit tests, a fake that needs no /dev/kvm. The ``VmmController`` calls these one at a time.
///
/// The async requirements here and in ``VmInstance`` are `nonisolated(nonsending)`: they run on the
/// caller's executor, the controller's `vmm-main` loop. (A plain nonisolated async function would run on
/// the calling task's preferred executor instead: for an API request, the `vmm-api` loop, which must
/// not build VMs or join vCPU threads.)
protocol VmBackend: Sendable {
    /// Checks `config` against the host and prepares what booting it takes. Runs at vm.create (so a bad
    /// kernel is refused before the VM exists) and again before each later boot.
    func prepare(_ config: VmConfig) throws(PrepareError) -> any PreparedVm

    /// Builds the VM from `prepared` and starts its vCPUs. `onStop` is called once, from any thread, when
    /// the guest stops the VM by itself (power-off, reset, fault). On failure nothing is left behind.
    nonisolated(nonsending) func boot(_ config: VmConfig, _ prepared: any PreparedVm,
                                      onStop: @escaping @Sendable (VmStopReason) -> Void) async throws(BootFailure) -> any VmInstance

    /// Builds the VM of `config` from `prepared` and loads `snapshot` into it (memory from `directory`);
    /// the VM comes back paused, or running if `resume`. On failure nothing is left behind.
    nonisolated(nonsending) func restore(_ config: VmConfig, _ prepared: any PreparedVm, snapshot: VmSnapshot,
                                         directory: String?, resume: Bool,
                                         onStop: @escaping @Sendable (VmStopReason) -> Void) async throws(VmmError) -> any VmInstance
}

extension VmBackend {
    nonisolated(nonsending) func restore(_ config: VmConfig, _ prepared: any PreparedVm, snapshot: VmSnapshot,
                                         directory: String?, resume: Bool,
                                         onStop: @escaping @Sendable (VmStopReason) -> Void) async throws(VmmError) -> any VmInstance {
        throw VmmError(.notSupported, "cannot restore the VM", "this backend has no snapshots")
    }
}

/// What ``VmBackend/prepare(_:)`` made, handed back to ``VmBackend/boot(_:_:onStop:)``.
protocol PreparedVm: Sendable {}

/// A booted VM.
protocol VmInstance: AnyObject, Sendable {
    /// Parks every vCPU; returns when none runs guest code.
    nonisolated(nonsending) func pause() async
    nonisolated(nonsending) func resume() async
    /// Presses the ACPI power button (the GED's event and interrupt).
    nonisolated(nonsending) func powerButton() async
    /// vm.resize: makes `request`'s vCPU count and RAM size present (docs/hotplug.md). A refusal (4xx)
    /// changes nothing.
    nonisolated(nonsending) func resize(_ request: ResizeRequest) async throws(VmmError)
    /// The ids of the virtio devices in attachment order (boot devices first, in config order).
    var virtioDeviceIDs: [String] { get }
    /// vm.add-disk / vm.add-net (`device` already validated against the config): opens its host side,
    /// attaches it in a free PCI slot and announces it to the guest. A refusal changes nothing.
    nonisolated(nonsending) func addDevice(_ device: HotplugDevice) async throws(VmmError) -> PciDeviceInfo
    /// vm.remove-device: asks the guest to eject device `id`; it goes when the guest has (docs/hotplug.md).
    nonisolated(nonsending) func removeDevice(id: String) async throws(VmmError)
    /// Stops the vCPUs and releases everything: threads, descriptors, guest RAM. Idempotent.
    nonisolated(nonsending) func shutdown() async
    /// Per-device counters: for each device, `requests`, `bytes`, `errors`, `interrupts`, then its own.
    nonisolated(nonsending) func counters() async -> [DeviceCounterSet]
    /// The devices and what they occupy (`vm.info`'s `device_tree`).
    func deviceTree() -> DeviceTree
    /// How much of the virtio-mem region the guest has plugged (nil without virtio-mem).
    var virtioMemPluggedSize: UInt64? { get }
    /// Writes a snapshot of the paused VM into `directory` (docs/snapshot.md).
    nonisolated(nonsending) func snapshot(to directory: String, config: [UInt8]) async throws(VmmError)
}

extension VmInstance {
    var virtioDeviceIDs: [String] { [] }
    var virtioMemPluggedSize: UInt64? { nil }

    nonisolated(nonsending) func addDevice(_ device: HotplugDevice) async throws(VmmError) -> PciDeviceInfo {
        throw VmmError(.notSupported, device.failure, "this backend has no PCI hotplug")
    }

    nonisolated(nonsending) func removeDevice(id: String) async throws(VmmError) {
        throw VmmError(.notSupported, VmAction.removeDevice.failure, "this backend has no PCI hotplug")
    }

    nonisolated(nonsending) func snapshot(to directory: String, config: [UInt8]) async throws(VmmError) {
        throw VmmError(.notSupported, "cannot snapshot the VM", "this backend has no snapshots")
    }
}

/// Why a prepared VM could not be built or started (a host problem: the API answers 500).
struct BootFailure: Error, Equatable, Sendable, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// The real backend: `Payload.prepare` and `Machine.build` on /dev/kvm.
struct KvmBackend: VmBackend {
    func prepare(_ config: VmConfig) throws(PrepareError) -> any PreparedVm {
        try Payload.prepare(config)
    }

    nonisolated(nonsending) func boot(_ config: VmConfig, _ prepared: any PreparedVm,
                                      onStop: @escaping @Sendable (VmStopReason) -> Void) async throws(BootFailure) -> any VmInstance {
        guard let payload = prepared as? PreparedPayload else { throw BootFailure("internal error: not a prepared payload") }
        let machine: Machine
        do {
            machine = try await Machine.build(config: config, prepared: payload, stopLatch: StopLatch(onStop: onStop))
        } catch {
            throw BootFailure("cannot create the VM: \(error)")
        }
        do {
            let stdin = try await machine.start(serialInput: config.serial == .tty)
            return MachineInstance(machine: machine, stdin: stdin)
        } catch {
            await machine.teardown(stdin: nil)
            throw BootFailure("cannot start the VM: \(error)")
        }
    }
}
