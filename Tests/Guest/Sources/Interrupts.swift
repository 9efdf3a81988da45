// Interrupts.swift: the IDT, the local APIC, the interrupt handler, and waiting for interrupts.
//
// Vectors used:
//   0-31        CPU exceptions: print `GUEST EXCEPTION vector=N rip=0x... error=0x...` and power
//               off, so a guest bug is one readable line instead of a triple fault
//   0x40-0x5F   MSI-X vectors handed out to virtio devices (Interrupts.allocateVectors)
//   0x60        `bench-ipi`'s self-IPI (BenchVirtio.swift)
//   0xFF        the LAPIC's spurious-interrupt vector (no EOI for it)
// Every vector has a gate (interrupts.S has 256 stubs); each interrupt that is not an exception
// is counted per vector, and wait loops watch the counters.
//
// The guest runs with interrupts off (IF=0) and enables them only inside `wait`. An MSI that
// arrives meanwhile stays pending in the LAPIC's IRR and is delivered at the next `sti`.

enum Interrupts {
    static let firstDeviceVector: UInt8 = 0x40
    static let lastDeviceVector: UInt8 = 0x5F
    static let spuriousVector: UInt8 = 0xFF
    /// `bench-ipi`'s self-IPI (outside the device range).
    static let benchVector: UInt8 = 0x60

    /// A generous bound for one device round trip, in TSC cycles (about 2 s at 2.5 GHz).
    static let defaultTimeout: UInt64 = 5_000_000_000

    /// Fills the IDT with an interrupt gate per vector, loads it, and enables the LAPIC.
    /// Called once at boot, before any check runs.
    static func install() {
        for vector in 0..<256 {
            setGate(UInt8(vector), handler: interrupt_stub_address(UInt8(vector)))
        }
        cpu_load_idt(guest_idt_address(), 256 * 16 - 1)
        Lapic.enable()
    }

    /// Points `vector`'s gate at `handler`: a 64-bit interrupt gate (IF cleared on entry): offset
    /// 15:0, selector, IST 0, type 0xE with P=1 and DPL=0 (0x8E), offset 31:16, offset 63:32,
    /// reserved. The benchmarks swap in their own entry point for one vector, then put the
    /// standard stub (`interrupt_stub_address`) back.
    static func setGate(_ vector: UInt8, handler: UInt64) {
        let idt = MmioBlock(base: guest_idt_address())
        let gate = Int(vector) * 16
        idt.write16(UInt16(truncatingIfNeeded: handler), at: gate)
        idt.write16(codeSelector, at: gate + 2)
        idt.write16(0x8E00, at: gate + 4)
        idt.write16(UInt16(truncatingIfNeeded: handler >> 16), at: gate + 6)
        idt.write32(UInt32(truncatingIfNeeded: handler >> 32), at: gate + 8)
        idt.write32(0, at: gate + 12)
    }

    /// The boot GDT's 64-bit code segment (the VMM's flat GDT; we keep it).
    static let codeSelector: UInt16 = 0x10

    /// How often `vector` has fired since boot.
    static func count(of vector: UInt8) -> UInt32 { interrupt_count(vector) }

    /// Enables interrupts until `vector`'s count differs from `seen`, or until the TSC passes
    /// `deadline`. Returns whether the interrupt came. Spins with `pause`: the vCPU stays
    /// runnable, which on a loaded host beats `hlt` with no timer to bound it.
    static func wait(for vector: UInt8, changingFrom seen: UInt32, until deadline: UInt64) -> Bool {
        cpu_enable_interrupts()
        defer { cpu_disable_interrupts() }
        while interrupt_count(vector) == seen {
            if CPU.timestamp() >= deadline { return false }
            cpu_pause()
        }
        return true
    }

    /// Hands out `count` consecutive vectors from 0x40-0x5F, wrapping around when they run out
    /// (devices of earlier checks have been reset by then, so their vectors are free again).
    static func allocateVectors(_ count: Int) -> UInt8 {
        let available = Int(lastDeviceVector - firstDeviceVector) + 1
        if nextVectorOffset + count > available { nextVectorOffset = 0 }
        let first = firstDeviceVector + UInt8(nextVectorOffset)
        nextVectorOffset += count
        return first
    }
    nonisolated(unsafe) private static var nextVectorOffset = 0
}

/// The local APIC in xAPIC mode: 4 KiB of MMIO registers at 0xFEE00000 (KVM's in-kernel APIC).
enum Lapic {
    static let base: UInt64 = 0xFEE0_0000
    static var registers: MmioBlock { MmioBlock(base: base) }

    static let idRegister = 0x20             // bits 31:24: this CPU's APIC id
    static let taskPriority = 0x80           // TPR: 0 lets every vector through
    static let endOfInterruptRegister = 0xB0 // EOI: write 0
    static let spuriousVectorRegister = 0xF0 // SVR: bit 8 software-enables the APIC, 7:0 vector
    static let interruptCommandLow = 0x300   // ICR 31:0: a write sends the IPI

    /// Software-enables the APIC (SVR bit 8) with spurious vector 0xFF, accepting all priorities.
    static func enable() {
        registers.write32(0, at: taskPriority)
        registers.write32(0x100 | UInt32(Interrupts.spuriousVector), at: spuriousVectorRegister)
    }

    static var id: UInt8 { UInt8(truncatingIfNeeded: registers.read32(at: idRegister) >> 24) }

    /// Tells the APIC the current interrupt is handled (lets lower-priority ones in).
    static func endOfInterrupt() { registers.write32(0, at: endOfInterruptRegister) }

    /// The MSI address that targets this CPU: 0xFEE00000 | destination APIC id << 12
    /// (physical destination mode, no redirection hint). The data is just the vector
    /// (fixed delivery, edge-triggered).
    static var msiAddress: UInt64 { base | UInt64(id) << 12 }
}

/// The one interrupt handler, called from `interrupt_common` (interrupts.S) with IF=0.
@_cdecl("guest_interrupt")
func guestInterrupt(_ frame: UnsafeMutablePointer<InterruptFrame>) {
    let vector = frame.pointee.vector
    if vector < 32 {
        // A CPU exception: the guest has a bug. Report it and stop the machine.
        var console = Serial.com1
        console.write("GUEST EXCEPTION vector=")
        console.write(decimal: vector)
        console.write(" rip=")
        console.write(hex: frame.pointee.rip)
        console.write(" error=")
        console.write(hex: frame.pointee.error_code)
        if vector == 14 {  // #PF: CR2 holds the faulting address
            console.write(" cr2=")
            console.write(hex: cpu_read_cr2())
        }
        console.write("\n")
        CPU.powerOff()
    }
    let v = UInt8(truncatingIfNeeded: vector)
    interrupt_count_increment(v)
    // A spurious interrupt is not in service: it must not be acknowledged.
    if v != Interrupts.spuriousVector { Lapic.endOfInterrupt() }
}
