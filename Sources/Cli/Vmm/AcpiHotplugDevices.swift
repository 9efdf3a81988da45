import ActorVmm
import Boot
import Devices
import EpollLoop

/// The ACPI platform devices of a VM (docs/hotplug.md): the Generic Event Device and the PCI, CPU and
/// memory hotplug register blocks, at the addresses the DSDT describes (`AcpiHotplug`, Boot's `Layout`).
/// They run on the device loop; the GED's interrupt is an irqfd on its GSI.
struct AcpiHotplugDevices: Sendable {
    let config: AcpiHotplug
    let ged: AcpiGed
    let pci: PciHotplugController
    let cpus: CpuHotplugController
    let memory: MemoryHotplugController

    /// Memory slots when RAM can be hot-added: each vm.resize that adds RAM takes one.
    static let memorySlots = 8

    /// What the DSDT describes for a VM that may hot-add `hotplugSize` bytes of RAM.
    static func acpi(hotplugSize: UInt64) -> AcpiHotplug { AcpiHotplug(memorySlots: hotplugSize > 0 ? memorySlots : 0) }

    init(vm: Vm, loop: EventLoop, config: AcpiHotplug, bootVcpus: Int, maxVcpus: Int) throws {
        self.config = config
        ged = AcpiGed(loop: loop, interrupt: try IrqFdLine(vm: vm, gsi: config.gedGsi))
        pci = PciHotplugController(loop: loop)
        cpus = CpuHotplugController(loop: loop, bootVcpus: bootVcpus, maxVcpus: maxVcpus)
        memory = MemoryHotplugController(loop: loop, slots: config.memorySlots)
    }

    /// The device ids of the four register blocks (platform ids: no user device may take them).
    static let ids: Set<String> = ["acpi-ged", "acpi-pci-hotplug", "acpi-cpu-hotplug", "acpi-memory-hotplug"]

    /// Puts the four register blocks on the VM's MMIO bus.
    func attach(to manager: DeviceManager) throws(DeviceManagerError) {
        try manager.attachPlatformDevice(id: "acpi-ged", mmio: [(config.gedAddress, AcpiGed.size)], .device(ged))
        try manager.attachPlatformDevice(id: "acpi-pci-hotplug", mmio: [(config.pciAddress, PciHotplugController.size)], .device(pci))
        try manager.attachPlatformDevice(id: "acpi-cpu-hotplug", mmio: [(config.cpuAddress, CpuHotplugController.size)], .device(cpus))
        try manager.attachPlatformDevice(id: "acpi-memory-hotplug", mmio: [(config.memoryAddress, MemoryHotplugController.size)],
                                         .device(memory))
    }

    /// Presses the power button: the guest's `_EVT` notifies `\_SB.PWRB`, and an OS that listens (Linux with
    /// acpid or systemd-logind) shuts down in an orderly way and powers off through `\_S5`.
    func pressPowerButton() async { await ged.pressPowerButton() }

    /// Ends the ejection streams (the machine is going away).
    func finish() async {
        await pci.finish()
        await cpus.finish()
    }
}
