import CKvm

/// Pause-everything, capture and restore for one VM: the vCPUs (through their ``VcpuManager``), the
/// in-kernel state (``Vm``) and every device the device manager's walk gives (each an actor capturing its
/// own state on its own executor). Guest memory goes to or comes from a ``MemoryImage`` file. The async
/// methods are `nonisolated(nonsending)`: the file work runs on the caller's executor (the VMM's `vmm-main`),
/// not on an API request's loop, whose seccomp filter allows no file creation or KVM ioctl.
public struct VmSnapshotter: Sendable {
    public let vm: Vm
    public let manager: VcpuManager
    /// In the device manager's walk order; quiesced in this order, resumed in reverse.
    public let devices: [any Snapshottable]

    public init(vm: Vm, manager: VcpuManager, devices: [any Snapshottable]) {
        self.vm = vm
        self.manager = manager
        self.devices = devices
    }

    /// Parks the vCPUs (no register access can reach a device after this), then quiesces every device.
    nonisolated(nonsending) public func pause() async {
        await manager.pause()
        for device in devices { await device.quiesce() }
    }

    /// Resumes the devices (serving what arrived meanwhile), then the vCPUs.
    nonisolated(nonsending) public func resume() async {
        for device in devices.reversed() { await device.resume() }
        await manager.resume()
    }

    /// vCPU, VM and device state (no memory). Call while paused.
    nonisolated(nonsending) public func capture(config: [UInt8]) async throws(SnapshotError) -> VmSnapshot {
        let xsaveSize = Int(vm.checkExtension(KVM_CAP_XSAVE2))
        let msrs: [UInt32]
        do throws(KvmError) {
            msrs = try vm.kvm.msrIndexList()
        } catch {
            throw .io("cannot list the MSRs to save: \(error)")
        }
        let vcpus = try await manager.captureVcpuStates(xsaveSize: xsaveSize, msrIndices: msrs)
        let kernel: VmKernelState
        do throws(KvmError) {
            kernel = try vm.captureState()
        } catch {
            throw .io("cannot capture the VM's irqchip and clock: \(error)")
        }
        var states: [(id: String, state: [UInt8])] = []
        for device in devices { states.append((device.snapshotID, await device.captureState())) }
        return VmSnapshot(config: config, vm: kernel, vcpus: vcpus, devices: states, memory: nil)
    }

    /// Writes a snapshot of the paused VM into `directory`: memory first, then `state.bin` (so a directory
    /// with a `state.bin` is complete).
    nonisolated(nonsending) public func snapshot(to directory: String, config: [UInt8]) async throws(SnapshotError) {
        try VmSnapshot.makeDirectory(directory)
        var snapshot = try await capture(config: config)
        snapshot.memory = try MemoryImage.write(vm.memory, to: directory + "/" + MemoryImage.fileName)
        try snapshot.write(to: directory)
    }

    /// Loads `snapshot` into this freshly built VM (vCPUs not started): memory from `directory` if given
    /// (a migration has filled it already), then the in-kernel state, the devices and the vCPUs. The
    /// devices stay quiesced; start the vCPUs with ``VcpuManager/startParked()`` and then ``resume()``.
    nonisolated(nonsending) public func restore(_ snapshot: VmSnapshot, memoryFrom directory: String?) async throws(SnapshotError) {
        if let directory {
            guard let image = snapshot.memory else { throw .missing("memory section") }
            try image.read(into: vm.memory, from: directory + "/" + image.fileName)
        }
        for device in devices {
            try await device.restoreState(try snapshot.deviceState(device.snapshotID))
        }
        let ours = Set(devices.map(\.snapshotID))
        if let extra = snapshot.devices.first(where: { !ours.contains($0.id) }) {
            throw .mismatch("the snapshot has a device '\(extra.id)' this VM lacks")
        }
        try vm.restoreState(snapshot.vm)
        try await manager.restoreVcpuStates(snapshot.vcpus)
    }
}
