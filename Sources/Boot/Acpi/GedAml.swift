import ActorVmm

/// What the DSDT says about run-time changes (docs/hotplug.md): the Generic Event Device and the
/// register blocks of the PCI, CPU and memory hotplug controllers. The register layouts are Cloud
/// Hypervisor's; the devices behind them are in `Devices/Acpi`.
public struct AcpiHotplug: Equatable, Sendable {
    /// The GED's event byte (MMIO) and its interrupt, an edge-triggered, active-high GSI of the I/O APIC.
    public var gedAddress: UInt64 = Layout.acpiGed
    public var gedGsi: UInt32 = 5
    /// The PCI hotplug block: PCIU, PCID, B0EJ, PSEG (4 bytes each). Slots 1–31 of bus 0 are hot-pluggable
    /// (slot 0 is the host bridge).
    public var pciAddress: UInt64 = Layout.acpiPciHotplug
    /// The CPU hotplug block: selector (4 bytes) and status (1 byte at 4), 12 bytes.
    public var cpuAddress: UInt64 = Layout.acpiCpuHotplug
    /// The memory hotplug block (0x18 bytes) and how many memory slots (`\_SB.MHPC.Mnnn`) it has; 0 means
    /// memory hotplug is off and `MSCN` does nothing.
    public var memoryAddress: UInt64 = Layout.acpiMemoryHotplug
    public var memorySlots: Int = 0

    public init(memorySlots: Int = 0) { self.memorySlots = memorySlots }

    /// Sizes of the register blocks.
    public static let gedSize: UInt64 = 1
    public static let pciSize: UInt64 = 16
    public static let cpuSize: UInt64 = 12
    public static let memorySize: UInt64 = 0x18
    /// Memory slots are named M000–M999 (`Mnnn`, decimal).
    public static let maxMemorySlots = 255

    /// The GED's event bits (what `_EVT` reads from the event byte), as Cloud Hypervisor's
    /// `AcpiNotificationFlags`.
    public enum Event {
        public static let cpuChanged: UInt8 = 1
        public static let memoryChanged: UInt8 = 2
        public static let pciChanged: UInt8 = 4
        public static let powerButton: UInt8 = 8
    }
}

/// The Generic Event Device (ACPI 6.5 §5.6.9, `ACPI0013`). As ASL:
///
/// ```
/// Device (\_SB.GED) {
///     Name (_HID, "ACPI0013")  Name (_UID, Zero)
///     Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 5 } })
///     OperationRegion (GDST, SystemMemory, 0xFEB00000, One)  // claimed by \_SB.MBRD
///     Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
///     Method (_EVT, 1, Serialized) {
///         Local0 = GDAT                       // reading clears the bits
///         If ((Local0 & 1) == 1) { \_SB.CPUS.CSCN () }
///         If ((Local0 & 2) == 2) { \_SB.MHPC.MSCN () }
///         If ((Local0 & 4) == 4) { \_SB.PCI0.PCNT () }
///         If ((Local0 & 8) == 8) { Notify (\_SB.PWRB, 0x80) }
///     }
/// }
/// ```
///
/// Linux's `acpi-ged` driver requests every interrupt its `_CRS` lists and runs `_EVT` on each one; any
/// other resource there makes its probe fail ("unable to parse IRQ resource", Linux 6.1's `evged.c`), so
/// the event byte's MMIO range is claimed by `\_SB.MBRD` instead (Cloud Hypervisor puts it in a second
/// device, `GEC_`).
enum GedAml {
    static func device(_ hotplug: AcpiHotplug) -> [UInt8] {
        typealias E = AcpiHotplug.Event
        func dispatch(_ bit: UInt8, _ action: [UInt8]) -> [UInt8] {
            Aml.ifThen(Aml.equal(Aml.and(Aml.local(0), Aml.integer(UInt64(bit))), Aml.integer(UInt64(bit))), [action])
        }
        return Aml.device("GED", [
            Aml.name("_HID", Aml.string("ACPI0013")),
            Aml.name("_UID", Aml.integer(0)),
            Aml.name("_CRS", Aml.resourceTemplate([AmlResource.interrupt([hotplug.gedGsi])])),
            Aml.operationRegion("GDST", .systemMemory, offset: hotplug.gedAddress, length: AcpiHotplug.gedSize),
            Aml.field("GDST", .byte, .writeAsZeros, [.named("GDAT", bits: 8)]),
            Aml.method("_EVT", arguments: 1, serialized: true, [
                Aml.store(Aml.path("GDAT"), into: Aml.local(0)),
                dispatch(E.cpuChanged, Aml.call("\\_SB.CPUS.CSCN")),
                dispatch(E.memoryChanged, Aml.call("\\_SB.MHPC.MSCN")),
                dispatch(E.pciChanged, Aml.call("\\_SB.PCI0.PCNT")),
                dispatch(E.powerButton, Aml.notify("\\_SB.PWRB", Aml.integer(0x80))),
            ]),
        ])
    }

    /// A PNP0A06 ("generic container") device holding a hotplug register block: `_HID`, `_UID` (a string,
    /// as Cloud Hypervisor), the block as its `_CRS`, then `terms`.
    static func controller(_ name: String, uid: String, address: UInt64, size: UInt64, _ terms: [[UInt8]]) -> [UInt8] {
        Aml.device(name, [
            Aml.name("_HID", Aml.eisaId("PNP0A06")),
            Aml.name("_UID", Aml.string(uid)),
            Aml.name("_CRS", Aml.resourceTemplate([
                AmlResource.memory32Fixed(base: UInt32(address), length: UInt32(size)),
            ])),
        ] + terms)
    }
}

/// ACPI PCI hotplug (the guest's `acpiphp`), as Cloud Hypervisor. As ASL:
///
/// ```
/// Device (\_SB.PHPR) {                      // the register block
///     Name (_HID, EisaId ("PNP0A06"))  Name (_UID, "PCI Hotplug Controller")  Name (_CRS, …)
///     Mutex (BLCK, 0)
///     OperationRegion (PCST, SystemMemory, 0xFEB01000, 0x10)
///     Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32, PSEG, 32 }
///     Method (PCEJ, 2, Serialized) {        // eject slot Arg0 of segment Arg1
///         Acquire (BLCK, 0xFFFF)  PSEG = Arg1  B0EJ = (One << Arg0)  Release (BLCK)  Return (Zero)
///     }
/// }
/// Scope (\_SB.PCI0) {                       // in the host bridge, for slots 1–31:
///     Device (S001) { Name (_SUN, 1)  Name (_ADR, 0x00010000)
///                     Method (_EJ0, 1, Serialized) { \_SB.PHPR.PCEJ (_SUN, _SEG) } }
///     …
///     Method (DVNT, 2, Serialized) {        // notify the slots whose bit is set in Arg0 with Arg1
///         Local0 = Arg0 & 2  If (Local0 == 2) { Notify (S001, Arg1) }  …
///     }
///     Method (PCNT, 0, Serialized) {        // called by the GED: 1 = device check, 3 = eject request
///         Acquire (\_SB.PHPR.BLCK, 0xFFFF)  \_SB.PHPR.PSEG = _SEG
///         DVNT (\_SB.PHPR.PCIU, One)  DVNT (\_SB.PHPR.PCID, 3)  Release (\_SB.PHPR.BLCK)
///     }
/// }
/// ```
/// Reading PCIU or PCID returns the slots that came up or should go and clears them.
enum PciHotplugAml {
    static let slots = 1...31

    static func controller(_ hotplug: AcpiHotplug) -> [UInt8] {
        GedAml.controller("PHPR", uid: "PCI Hotplug Controller", address: hotplug.pciAddress, size: AcpiHotplug.pciSize, [
            Aml.mutex("BLCK"),
            Aml.operationRegion("PCST", .systemMemory, offset: hotplug.pciAddress, length: AcpiHotplug.pciSize),
            Aml.field("PCST", .dword, .writeAsZeros, [
                .named("PCIU", bits: 32), .named("PCID", bits: 32), .named("B0EJ", bits: 32), .named("PSEG", bits: 32),
            ]),
            Aml.method("PCEJ", arguments: 2, serialized: true, [
                Aml.acquire("BLCK"),
                Aml.store(Aml.arg(1), into: Aml.path("PSEG")),
                Aml.shiftLeft(Aml.integer(1), Aml.arg(0), into: Aml.path("B0EJ")),
                Aml.release("BLCK"),
                Aml.returnValue(Aml.integer(0)),
            ]),
        ])
    }

    static func slotName(_ slot: Int) -> String { "S" + pad(slot, 3) }

    /// The terms added inside `\_SB.PCI0`: one device per slot, `DVNT` and `PCNT`.
    static func slotTerms() -> [[UInt8]] {
        let devices = slots.map { slot in
            Aml.device(slotName(slot), [
                Aml.name("_SUN", Aml.integer(UInt64(slot))),
                Aml.name("_ADR", Aml.integer(UInt64(slot) << 16)),
                Aml.method("_EJ0", arguments: 1, serialized: true, [
                    Aml.call("\\_SB.PHPR.PCEJ", [Aml.path("_SUN"), Aml.path("_SEG")]),
                ]),
            ])
        }
        let notifies = slots.flatMap { slot -> [[UInt8]] in
            let mask = Aml.integer(UInt64(1) << UInt64(slot))
            return [Aml.and(Aml.arg(0), mask, into: Aml.local(0)),
                    Aml.ifThen(Aml.equal(Aml.local(0), mask), [Aml.notify(slotName(slot), Aml.arg(1))])]
        }
        return devices + [
            Aml.method("DVNT", arguments: 2, serialized: true, notifies),
            Aml.method("PCNT", serialized: true, [
                Aml.acquire("\\_SB.PHPR.BLCK"),
                Aml.store(Aml.path("_SEG"), into: Aml.path("\\_SB.PHPR.PSEG")),
                Aml.call("DVNT", [Aml.path("\\_SB.PHPR.PCIU"), Aml.integer(1)]),
                Aml.call("DVNT", [Aml.path("\\_SB.PHPR.PCID"), Aml.integer(3)]),
                Aml.release("\\_SB.PHPR.BLCK"),
            ]),
        ]
    }

    /// `value` in decimal, zero-padded to `width` digits.
    static func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
