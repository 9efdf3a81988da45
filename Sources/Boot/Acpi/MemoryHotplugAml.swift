/// ACPI memory hotplug, as Cloud Hypervisor (`vmm/src/memory_manager.rs`), plus `_OST`. As ASL:
///
/// ```
/// Device (\_SB.MHPC) {
///     Name (_HID, EisaId ("PNP0A06"))  Name (_UID, "Memory Hotplug Controller")  Name (_CRS, …)
///     Mutex (MLCK, 0)
///     OperationRegion (MHPR, SystemMemory, 0xFEB03000, 0x18)
///     Field (MHPR, DWordAcc, NoLock, Preserve) { MHBL, 32, MHBH, 32, MHLL, 32, MHLH, 32 }  // base, length
///     Field (MHPR, DWordAcc, NoLock, Preserve) { Offset (16), MHPX, 32 }                  // proximity
///     Field (MHPR, ByteAcc, NoLock, WriteAsZeros) { Offset (20), MEN_, 1, MINS, 1, MRMV, 1, MEJ0, 1 }
///     Field (MHPR, DWordAcc, NoLock, Preserve) { MSEL, 32, MOEV, 32, MOSC, 32 }          // selector, _OST
///     Method (MTFY, 2, Serialized) { If (Arg0 == Zero) { Notify (M000, Arg1) }  … }
///     Method (MSCN, 0, Serialized) { … as CSCN, with MINS/MRMV and MTFY … }              // called by the GED
///     Method (MSTA, 1, Serialized) { … MSEL = Arg0; Return (MEN_ ? 0x0F : Zero) … }
///     Method (MCRS, 1, Serialized) {                                                      // the slot's range
///         Acquire (MLCK, 0xFFFF)  MSEL = Arg0
///         Name (MR64, ResourceTemplate () { QWordMemory (…, Cacheable, ReadWrite, …) })
///         CreateQWordField (MR64, 14, MINL)  CreateQWordField (MR64, 22, MAXL)  CreateQWordField (MR64, 38, LENL)
///         MINL = (MHBH << 32) | MHBL  LENL = (MHLH << 32) | MHLL  MAXL = MINL + LENL - One
///         Release (MLCK)  Return (MR64)
///     }
///     Method (MOST, 3, Serialized) { Acquire (MLCK, 0xFFFF)  MSEL = Arg0  MOEV = Arg1  MOSC = Arg2  Release (MLCK) }
///     Device (M000) {                        // one per slot
///         Name (_HID, EisaId ("PNP0C80"))  Name (_UID, Zero)
///         Method (_STA, 0) { Return (MSTA (Zero)) }
///         Method (_CRS, 0) { Return (MCRS (Zero)) }
///         Method (_OST, 3) { MOST (Zero, Arg0, Arg1) }  // the guest reports how the hot-add went
///     }
/// }
/// ```
/// With no slots, `\_SB.MHPC` only has an empty `MSCN`, for the GED to call.
enum MemoryHotplugAml {
    static func slotName(_ slot: Int) -> String { "M" + PciHotplugAml.pad(slot, 3) }

    static func controller(_ hotplug: AcpiHotplug) -> [UInt8] {
        let slots = hotplug.memorySlots
        guard slots > 0 else {
            return Aml.device("MHPC", [
                Aml.name("_HID", Aml.eisaId("PNP0A06")),
                Aml.name("_UID", Aml.string("Memory Hotplug Controller")),
                Aml.method("MSCN", serialized: true, []),
            ])
        }
        let one = Aml.integer(1)
        func p(_ name: String) -> [UInt8] { Aml.path(name) }
        let registers: [[UInt8]] = [
            Aml.mutex("MLCK"),
            Aml.operationRegion("MHPR", .systemMemory, offset: hotplug.memoryAddress, length: AcpiHotplug.memorySize),
            Aml.field("MHPR", .dword, .preserve, [.named("MHBL", bits: 32), .named("MHBH", bits: 32),
                                                  .named("MHLL", bits: 32), .named("MHLH", bits: 32)]),
            Aml.field("MHPR", .dword, .preserve, [.reserved(bits: 128), .named("MHPX", bits: 32)]),
            Aml.field("MHPR", .byte, .writeAsZeros, [.reserved(bits: 160), .named("MEN_", bits: 1), .named("MINS", bits: 1),
                                                     .named("MRMV", bits: 1), .named("MEJ0", bits: 1)]),
            Aml.field("MHPR", .dword, .preserve, [.named("MSEL", bits: 32), .named("MOEV", bits: 32), .named("MOSC", bits: 32)]),
        ]
        let methods: [[UInt8]] = [
            Aml.method("MTFY", arguments: 2, serialized: true, (0..<slots).map { slot in
                Aml.ifThen(Aml.equal(Aml.arg(0), Aml.integer(UInt64(slot))), [Aml.notify(slotName(slot), Aml.arg(1))])
            }),
            Aml.method("MSCN", serialized: true, [
                Aml.acquire("MLCK"),
                Aml.store(Aml.integer(0), into: Aml.local(0)),
                Aml.whileLoop(Aml.less(Aml.local(0), Aml.integer(UInt64(slots))), [
                    Aml.store(Aml.local(0), into: p("MSEL")),
                    Aml.ifThen(Aml.equal(p("MINS"), one), [Aml.call("MTFY", [Aml.local(0), one]), Aml.store(one, into: p("MINS"))]),
                    Aml.ifThen(Aml.equal(p("MRMV"), one), [Aml.call("MTFY", [Aml.local(0), Aml.integer(3)]),
                                                         Aml.store(one, into: p("MRMV"))]),
                    Aml.add(Aml.local(0), one, into: Aml.local(0)),
                ]),
                Aml.release("MLCK"),
            ]),
            Aml.method("MSTA", arguments: 1, serialized: true, [
                Aml.acquire("MLCK"),
                Aml.store(Aml.arg(0), into: p("MSEL")),
                Aml.store(Aml.integer(0), into: Aml.local(0)),
                Aml.ifThen(Aml.equal(p("MEN_"), one), [Aml.store(Aml.integer(0xF), into: Aml.local(0))]),
                Aml.release("MLCK"),
                Aml.returnValue(Aml.local(0)),
            ]),
            Aml.method("MCRS", arguments: 1, serialized: true, [
                Aml.acquire("MLCK"),
                Aml.store(Aml.arg(0), into: p("MSEL")),
                Aml.name("MR64", Aml.resourceTemplate([AmlResource.qwordMemory(0...0xFFFF_FFFF_FFFF_FFFE, cacheable: true)])),
                Aml.createQWordField("MR64", byteIndex: 14, "MINL"),
                Aml.createQWordField("MR64", byteIndex: 22, "MAXL"),
                Aml.createQWordField("MR64", byteIndex: 38, "LENL"),
                Aml.or(Aml.shiftLeft(p("MHBH"), Aml.integer(32)), p("MHBL"), into: p("MINL")),
                Aml.or(Aml.shiftLeft(p("MHLH"), Aml.integer(32)), p("MHLL"), into: p("LENL")),
                Aml.subtract(Aml.add(p("MINL"), p("LENL")), one, into: p("MAXL")),
                Aml.release("MLCK"),
                Aml.returnValue(p("MR64")),
            ]),
            Aml.method("MOST", arguments: 3, serialized: true, [
                Aml.acquire("MLCK"),
                Aml.store(Aml.arg(0), into: p("MSEL")),
                Aml.store(Aml.arg(1), into: p("MOEV")),
                Aml.store(Aml.arg(2), into: p("MOSC")),
                Aml.release("MLCK"),
            ]),
        ]
        let devices = (0..<slots).map { slot in
            let n = Aml.integer(UInt64(slot))
            return Aml.device(slotName(slot), [
                Aml.name("_HID", Aml.eisaId("PNP0C80")),
                Aml.name("_UID", n),
                Aml.method("_STA", [Aml.returnValue(Aml.call("MSTA", [n]))]),
                Aml.method("_CRS", [Aml.returnValue(Aml.call("MCRS", [n]))]),
                Aml.method("_OST", arguments: 3, [Aml.call("MOST", [n, Aml.arg(0), Aml.arg(1)])]),
            ])
        }
        return GedAml.controller("MHPC", uid: "Memory Hotplug Controller", address: hotplug.memoryAddress,
                                 size: AcpiHotplug.memorySize, registers + methods + devices)
    }
}
