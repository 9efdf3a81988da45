/// ACPI CPU hotplug, as Cloud Hypervisor (`vmm/src/cpu.rs`). As ASL:
///
/// ```
/// Device (\_SB.PRES) {                       // the register block
///     Name (_HID, EisaId ("PNP0A06"))  Name (_UID, "CPU Hotplug Controller")  Name (_CRS, …)
///     Mutex (CPLK, 0)
///     OperationRegion (PRST, SystemMemory, 0xFEB02000, 0x0C)
///     Field (PRST, ByteAcc, NoLock, WriteAsZeros) { Offset (4), CPEN, 1, CINS, 1, CRMV, 1, CEJ0, 1, , 4, CCMD, 8 }
///     Field (PRST, DWordAcc, NoLock, Preserve) { CSEL, 32, , 32, CDAT, 32 }
/// }
/// Device (\_SB.CPUS) {
///     Name (_HID, "ACPI0010")  Name (_CID, EisaId ("PNP0A05"))
///     Method (CSTA, 1, Serialized) {         // _STA of vCPU Arg0: 0xF when enabled, else 0
///         Acquire (\_SB.PRES.CPLK, 0xFFFF)  \_SB.PRES.CSEL = Arg0  Local0 = Zero
///         If (\_SB.PRES.CPEN == One) { Local0 = 0x0F }
///         Release (\_SB.PRES.CPLK)  Return (Local0)
///     }
///     Method (CTFY, 2, Serialized) { If (Arg0 == Zero) { Notify (C000, Arg1) }  … }
///     Method (CEJ0, 1, Serialized) {         // the guest ejects vCPU Arg0
///         Acquire (\_SB.PRES.CPLK, 0xFFFF)  \_SB.PRES.CSEL = Arg0  \_SB.PRES.CEJ0 = One  Release (\_SB.PRES.CPLK)
///     }
///     Method (CSCN, 0, Serialized) {         // called by the GED
///         Acquire (\_SB.PRES.CPLK, 0xFFFF)  Local0 = Zero
///         While (Local0 < max) {
///             \_SB.PRES.CSEL = Local0
///             If (\_SB.PRES.CINS == One) { CTFY (Local0, One)  \_SB.PRES.CINS = One }  // device check, ack
///             If (\_SB.PRES.CRMV == One) { CTFY (Local0, 3)  \_SB.PRES.CRMV = One }    // eject request, ack
///             Local0 += One
///         }
///         Release (\_SB.PRES.CPLK)
///     }
///     Device (C000) {                        // one per possible vCPU, C000…C0FD (hex)
///         Name (_HID, "ACPI0007")  Name (_UID, Zero)
///         Method (_STA, 0) { Return (CSTA (Zero)) }
///         Name (_MAT, Buffer () { 0x00, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00 })  // LAPIC, Enabled
///         Method (_EJ0, 1) { CEJ0 (Zero) }
///     }
/// }
/// ```
/// `_MAT` is the vCPU's MADT Processor Local APIC entry with Enabled set, which Linux reads when the CPU is
/// hot-added. The MADT lists the vCPUs that are not present at boot as Online Capable.
enum CpuHotplugAml {
    static func controller(_ hotplug: AcpiHotplug) -> [UInt8] {
        GedAml.controller("PRES", uid: "CPU Hotplug Controller", address: hotplug.cpuAddress, size: AcpiHotplug.cpuSize, [
            Aml.mutex("CPLK"),
            Aml.operationRegion("PRST", .systemMemory, offset: hotplug.cpuAddress, length: AcpiHotplug.cpuSize),
            Aml.field("PRST", .byte, .writeAsZeros, [
                .reserved(bits: 32), .named("CPEN", bits: 1), .named("CINS", bits: 1), .named("CRMV", bits: 1),
                .named("CEJ0", bits: 1), .reserved(bits: 4), .named("CCMD", bits: 8),
            ]),
            Aml.field("PRST", .dword, .preserve, [.named("CSEL", bits: 32), .reserved(bits: 32), .named("CDAT", bits: 32)]),
        ])
    }

    static func cpuName(_ id: Int) -> String {
        let hex = String(id, radix: 16, uppercase: true)
        return "C" + String(repeating: "0", count: max(0, 3 - hex.count)) + hex
    }

    static func processors(maxVcpus: Int) -> [UInt8] {
        let lock = "\\_SB.PRES.CPLK"
        func field(_ name: String) -> [UInt8] { Aml.path("\\_SB.PRES." + name) }
        let one = Aml.integer(1)
        let methods = [
            Aml.method("CSTA", arguments: 1, serialized: true, [
                Aml.acquire(lock),
                Aml.store(Aml.arg(0), into: field("CSEL")),
                Aml.store(Aml.integer(0), into: Aml.local(0)),
                Aml.ifThen(Aml.equal(field("CPEN"), one), [Aml.store(Aml.integer(0xF), into: Aml.local(0))]),
                Aml.release(lock),
                Aml.returnValue(Aml.local(0)),
            ]),
            Aml.method("CTFY", arguments: 2, serialized: true, (0..<maxVcpus).map { id in
                Aml.ifThen(Aml.equal(Aml.arg(0), Aml.integer(UInt64(id))), [Aml.notify(cpuName(id), Aml.arg(1))])
            }),
            Aml.method("CEJ0", arguments: 1, serialized: true, [
                Aml.acquire(lock),
                Aml.store(Aml.arg(0), into: field("CSEL")),
                Aml.store(one, into: field("CEJ0")),
                Aml.release(lock),
            ]),
            Aml.method("CSCN", serialized: true, [
                Aml.acquire(lock),
                Aml.store(Aml.integer(0), into: Aml.local(0)),
                Aml.whileLoop(Aml.less(Aml.local(0), Aml.integer(UInt64(maxVcpus))), [
                    Aml.store(Aml.local(0), into: field("CSEL")),
                    Aml.ifThen(Aml.equal(field("CINS"), one), [
                        Aml.call("CTFY", [Aml.local(0), one]),
                        Aml.store(one, into: field("CINS")),
                    ]),
                    Aml.ifThen(Aml.equal(field("CRMV"), one), [
                        Aml.call("CTFY", [Aml.local(0), Aml.integer(3)]),
                        Aml.store(one, into: field("CRMV")),
                    ]),
                    Aml.add(Aml.local(0), one, into: Aml.local(0)),
                ]),
                Aml.release(lock),
            ]),
        ]
        let cpus = (0..<maxVcpus).map { id in
            Aml.device(cpuName(id), [
                Aml.name("_HID", Aml.string("ACPI0007")),
                Aml.name("_UID", Aml.integer(UInt64(id))),
                Aml.method("_STA", [Aml.returnValue(Aml.call("CSTA", [Aml.integer(UInt64(id))]))]),
                Aml.name("_MAT", Aml.buffer(Madt.localApic(id: id, enabled: true))),
                Aml.method("_EJ0", arguments: 1, [Aml.call("CEJ0", [Aml.integer(UInt64(id))])]),
            ])
        }
        return Aml.device("CPUS", [
            Aml.name("_HID", Aml.string("ACPI0010")),
            Aml.name("_CID", Aml.eisaId("PNP0A05")),
        ] + methods + cpus)
    }
}
