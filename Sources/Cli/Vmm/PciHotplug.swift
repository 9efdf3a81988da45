import ActorVmm
import Devices
import EpollLoop

/// `vm.add-disk`, `vm.add-net` and `vm.remove-device` on a running VM (docs/hotplug.md, "PCI devices"):
/// the device manager attaches a device in a free slot and publishes the new buses to the vCPUs, then the
/// PCI hotplug block marks the slot up and the GED interrupts the guest; a removal marks the slot down and
/// interrupts, and when the guest ejects the slot (`_EJ0` → B0EJ) the device manager detaches the device.
final class PciHotplug: Sendable {
    let devices: DeviceManager
    let acpi: AcpiHotplugDevices
    /// The shared device loop, and where `--event-loops` puts hot-added devices (as boot devices).
    let loop: EventLoop
    let placement: Placement
    /// Detaches what the guest ejects, on the control loop (never a device loop: a detach waits for the
    /// vCPUs to leave the old buses, and an exit may be waiting for a device loop), until the stream ends.
    let ejectionWatcher: Task<Void, Never>

    init(devices: DeviceManager, acpi: AcpiHotplugDevices, loop: EventLoop, placement: Placement, controlLoop: EventLoop) {
        self.devices = devices
        self.acpi = acpi
        self.loop = loop
        self.placement = placement
        let ejections = acpi.pci.ejections
        ejectionWatcher = Task(executorPreference: controlLoop) { [devices] in
            for await slot in ejections {
                guard let id = devices.virtioID(inSlot: slot) else {
                    Log.warning("pci hotplug: the guest ejected slot \(slot), which holds no device the VMM can remove")
                    continue
                }
                do {
                    try await devices.detach(id: id)
                    Log.info("PCI 00:\(slot).0: '\(id)' removed (the guest ejected it)")
                } catch {
                    Log.warning("PCI 00:\(slot).0: cannot remove '\(id)': \(error)")
                }
            }
        }
    }

    /// Attaches the opened virtio device `prepared` as its id (or the next one of its prefix), where
    /// `--event-loops` puts it, and announces it to the guest. Runs on the caller's executor (the
    /// controller's `vmm-main`). On failure nothing is attached (and the loops made for it are gone).
    nonisolated(nonsending) func add(_ prepared: PreparedDevices.Virtio) async throws(DeviceManagerError) -> PciDeviceInfo {
        let id = prepared.id ?? devices.nextID(prefix: prepared.idPrefix)
        _ = try await devices.attach(prepared, id: id, placement: placement, sharedLoop: loop)
        guard let slot = devices.slot(of: id) else { throw .unknownDevice(id) }
        await acpi.pci.slotAdded(slot)
        await acpi.ged.notify(.pci)
        return PciDeviceInfo(id: id, bdf: PciBdf(device: UInt8(slot)))
    }

    /// Asks the guest to give device `id` back; it goes when the guest ejects its slot.
    nonisolated(nonsending) func requestRemoval(id: String) async throws(DeviceManagerError) {
        guard let slot = devices.slot(of: id), devices.virtioID(inSlot: slot) == id else { throw .unknownDevice(id) }
        await acpi.pci.removalRequested(slot)
        await acpi.ged.notify(.pci)
        Log.info("PCI 00:\(slot).0: removal of '\(id)' requested")
    }
}

/// Cloud Hypervisor's `PciDeviceInfo`: what vm.add-disk and vm.add-net answer.
struct PciDeviceInfo: Equatable, Sendable {
    let id: String
    let bdf: PciBdf

    var json: JsonValue { .object(["id": .string(id), "bdf": .string(bdf.description)]) }
}

extension DeviceManager {
    /// The PCI slot device `id` occupies, or nil.
    func slot(of id: String) -> Int? {
        tree.nodes.first { $0.parent == id && $0.pciBdf != nil }?.pciBdf.map { Int($0.device) }
    }

    /// The id of the virtio device in `slot`, or nil.
    func virtioID(inSlot slot: Int) -> String? {
        virtioDevices.first { self.slot(of: $0.id) == slot }?.id
    }
}
