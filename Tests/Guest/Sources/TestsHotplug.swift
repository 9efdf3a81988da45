// TestsHotplug.swift: `hotplug`, ACPI PCI hotplug as the guest's side sees it (docs/hotplug.md), without an
// AML interpreter: what Linux's acpiphp does through the DSDT's PCNT and _EJ0, done on the registers.

/// The GED's event byte (reading returns the pending events and clears them) and the PCI hotplug block.
enum HotplugRegisters {
    static let ged = MmioBlock(base: 0xFEB0_0000)
    static let gedPciEvent: UInt8 = 4
    static let gedPowerButton: UInt8 = 8
    static let pci = MmioBlock(base: 0xFEB0_1000)
    static let up = 0, down = 4, eject = 8
}

/// `hotplug` (by name only): prints `HOTPLUG READY`; waits for the GED's PCI event and reads PCIU: exactly one
/// slot came up, and its function 0 is a virtio device, the same through ECAM and 0xCF8/0xCFC (the ports the
/// VMM remade for the new slot); prints `HOTPLUG ADDED slot=N`; waits for the next PCI event and reads PCID:
/// the host wants that slot back; ejects it (B0EJ, as `_EJ0` does), waits until the slot reads all-ones,
/// prints `HOTPLUG REMOVED` and waits for the power button (the host checks the VMM in between).
/// Each wait is bounded by `hotplug_wait` TSC cycles (default 6e10, about 20 s). Detail:
/// `slot=5 id=1af41042 removed`, or the step that failed.
func hotplugTest(_ context: inout TestContext) -> Bool {
    var console = Serial.com1
    let limit = context.boot.commandLine.commandLineValue(of: "hotplug_wait").flatMap { $0.parsedUnsigned() } ?? 60_000_000_000

    /// Polls the GED until `event` is pending; false on timeout.
    func waitForEvent(_ event: UInt8) -> Bool {
        let deadline = CPU.timestamp() &+ limit
        while CPU.timestamp() < deadline {
            if HotplugRegisters.ged.read8(at: 0) & event != 0 { return true }
            let pause = CPU.timestamp() &+ 2_000_000
            while CPU.timestamp() < pause {}
        }
        return false
    }

    console.write("HOTPLUG READY\n")
    guard waitForEvent(HotplugRegisters.gedPciEvent) else {
        context.detail.write("no-add-event")
        return false
    }
    let up = HotplugRegisters.pci.read32(at: HotplugRegisters.up)
    guard up != 0, up & (up - 1) == 0 else {
        context.detail.write("pciu=")
        context.detail.write(hex: up, digits: 8)
        return false
    }
    let slot = UInt8(up.trailingZeroBitCount)
    context.detail.write("slot=")
    context.detail.write(decimal: slot)
    let viaEcam = Pci.ecam(slot, 0).read32(at: Pci.vendorID)
    let viaPorts = PciConfigPorts(device: slot, function: 0).read32(at: Pci.vendorID)
    context.detail.write(" id=")
    context.detail.write(hex: (viaEcam & 0xFFFF) << 16 | viaEcam >> 16, digits: 8)
    guard viaEcam & 0xFFFF == 0x1AF4, viaPorts == viaEcam else {
        context.detail.write(" ports=")
        context.detail.write(hex: viaPorts, digits: 8)
        return false
    }
    console.write("HOTPLUG ADDED slot=")
    console.write(decimal: slot)
    console.write("\n")

    guard waitForEvent(HotplugRegisters.gedPciEvent) else {
        context.detail.write(" no-remove-event")
        return false
    }
    let down = HotplugRegisters.pci.read32(at: HotplugRegisters.down)
    guard down == UInt32(1) << slot else {
        context.detail.write(" pcid=")
        context.detail.write(hex: down, digits: 8)
        return false
    }
    HotplugRegisters.pci.write32(UInt32(1) << slot, at: HotplugRegisters.eject)
    let deadline = CPU.timestamp() &+ limit
    while Pci.ecam(slot, 0).read32(at: Pci.vendorID) != 0xFFFF_FFFF {
        guard CPU.timestamp() < deadline else {
            context.detail.write(" still-present")
            return false
        }
    }
    guard PciConfigPorts(device: slot, function: 0).read32(at: Pci.vendorID) == 0xFFFF_FFFF else {
        context.detail.write(" ports-still-present")
        return false
    }
    context.detail.write(" removed")
    console.write("HOTPLUG REMOVED\n")
    guard waitForEvent(HotplugRegisters.gedPowerButton) else {  // the host has looked at the VMM meanwhile
        context.detail.write(" no-power-button")
        return false
    }
    return true
}
