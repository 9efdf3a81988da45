import ActorVmm
import Boot
import Devices
import Synchronization

/// The RAM half of `vm.resize` with `hotplug_method=acpi` (docs/hotplug.md): grows guest RAM in 128 MiB
/// blocks, each resize one ACPI memory device above all boot RAM, up to `hotplug_size` bytes in all. RAM is
/// never taken back (as Cloud Hypervisor's ACPI method). Resizes run on the caller's executor (the
/// controller's `vmm-main`, which may map memory and call KVM) and one at a time (the controller's turns).
final class MemoryHotplug: Sendable {
    let vm: Vm
    let devices: AcpiHotplugDevices
    let hotplugSize: UInt64
    /// Where the next hot-added range starts, and how much has been added.
    private let state: Mutex<(next: UInt64, plugged: UInt64)>

    init(vm: Vm, devices: AcpiHotplugDevices, bootRam: UInt64, hotplugSize: UInt64) {
        self.vm = vm
        self.devices = devices
        self.hotplugSize = hotplugSize
        state = Mutex((next: Layout.hotplugRamStart(bootRam: bootRam), plugged: 0))
    }

    /// Why a resize was refused (nothing changed) or failed.
    struct ResizeError: Error, Equatable, CustomStringConvertible {
        let message: String
        let refused: Bool
        var description: String { message }
    }

    /// Grows RAM to `desired` bytes.
    nonisolated(nonsending) func resize(to desired: UInt64) async throws(ResizeError) {
        let current = vm.memory.totalSize
        let (next, plugged) = state.withLock { ($0.next, $0.plugged) }
        guard desired != current else { return }
        let block = Layout.hotplugRamAlignment
        guard desired > current else {
            throw ResizeError(message: "desired_ram \(desired): RAM cannot shrink below \(current) bytes with hotplug_method=acpi", refused: true)
        }
        let delta = desired - current
        guard delta % block == 0 else {
            throw ResizeError(message: "desired_ram \(desired): must grow RAM by a multiple of 128 MiB (by \(delta) bytes now)", refused: true)
        }
        guard plugged + delta <= hotplugSize else {
            throw ResizeError(message: "desired_ram \(desired): beyond boot RAM + hotplug_size (\(current - plugged + hotplugSize) bytes)", refused: true)
        }
        let memory = devices.memory
        guard await memory.slots.contains(where: { !$0.enabled }) else {
            throw ResizeError(message: "desired_ram \(desired): every memory hotplug slot is in use", refused: true)
        }
        let start = next
        do {
            try vm.addMemory(start: GuestAddress(start), size: delta)
        } catch {
            throw ResizeError(message: "cannot add \(delta >> 20) MiB of RAM at \(hex(start)): \(error)", refused: false)
        }
        _ = await memory.plug(base: start, length: delta)
        state.withLock { $0 = (next: start + delta, plugged: plugged + delta) }
        await devices.ged.notify(.memory)
        Log.info("memory: \(delta >> 20) MiB added at \(hex(start)) (now \(vm.memory.totalSize >> 20) MiB)")
    }
}
