import ActorVmm
import CKvm
import Devices
import EpollLoop

/// The vCPU half of `vm.resize` (docs/hotplug.md): adds vCPUs (created or reused, configured with the
/// topology for max, thread started, announced through the CPU hotplug block and the GED) or asks the
/// guest to give vCPUs back, and ends the thread of each vCPU the guest ejects.
final class VcpuHotplug: Sendable {
    let vm: Vm
    let manager: VcpuManager
    let devices: AcpiHotplugDevices
    let supportedCPUID: [kvm_cpuid_entry2]
    let maxVcpus: Int
    let threadOptions: VcpuThreadOptions
    /// Consumes the guest's ejections on the vCPU manager's loop until the stream ends (at teardown).
    let ejectionWatcher: Task<Void, Never>

    init(vm: Vm, manager: VcpuManager, devices: AcpiHotplugDevices, supportedCPUID: [kvm_cpuid_entry2], maxVcpus: Int,
         threadOptions: VcpuThreadOptions) {
        self.vm = vm
        self.manager = manager
        self.devices = devices
        self.supportedCPUID = supportedCPUID
        self.maxVcpus = maxVcpus
        self.threadOptions = threadOptions
        let ejections = devices.cpus.ejections
        ejectionWatcher = Task(executorPreference: manager.loop) { [manager] in
            for await id in ejections {
                do {
                    try await manager.remove(id: id)
                    Log.info("vcpu\(id) removed (the guest ejected it)")
                } catch {
                    Log.warning("vcpu\(id): cannot remove it: \(error)")
                }
            }
        }
    }

    /// Why a resize was refused (the VM is untouched) or failed.
    enum ResizeError: Error, Equatable, CustomStringConvertible {
        case outOfRange(desired: Int, max: Int)
        case removalPending
        case failed(String)
        var description: String {
            switch self {
            case .outOfRange(let desired, let max): "desired_vcpus \(desired): must be 1 to max_vcpus (\(max))"
            case .removalPending: "a vCPU removal is still pending (the guest has not ejected it yet)"
            case .failed(let why): why
            }
        }
    }

    /// Makes `desired` vCPUs present: the missing lowest ids are added, or the highest ids (never 0) are
    /// asked for. Removal completes when the guest ejects them; until then they count as present.
    /// Runs on the caller's executor (the controller's `vmm-main`, which may create vCPUs).
    nonisolated(nonsending) func resize(to desired: Int) async throws(ResizeError) {
        guard (1...maxVcpus).contains(desired) else { throw .outOfRange(desired: desired, max: maxVcpus) }
        guard await !devices.cpus.removalPending else { throw .removalPending }
        let present = await devices.cpus.enabledVcpus
        if desired > present.count {
            for id in (0..<maxVcpus).filter({ !present.contains($0) }).prefix(desired - present.count) {
                do {
                    let vcpu: Vcpu
                    if let reused = await manager.takeRemovedVcpu(id: id) {
                        vcpu = reused
                    } else {
                        vcpu = try vm.createVcpu(id: id)
                        try vcpu.configure(supportedCPUID: supportedCPUID, maxVcpus: maxVcpus)
                    }
                    try await manager.add(vcpu, options: threadOptions)
                } catch {
                    await devices.ged.notify(.cpu)  // announce what was added before the failure
                    throw .failed("cannot add vcpu\(id): \(error)")
                }
                await devices.cpus.insert(id)
                Log.info("vcpu\(id) added")
            }
            await devices.ged.notify(.cpu)
        } else if desired < present.count {
            for id in present.reversed().prefix(present.count - desired) where id != 0 {
                await devices.cpus.requestRemoval(id)
            }
            await devices.ged.notify(.cpu)
        }
    }
}
