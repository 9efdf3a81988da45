// Hardware.swift: Swift-side access to registers, the clock and power, over Hardware.h.

/// A block of device registers addressed by byte offset, reached through either I/O ports or
/// MMIO. Tests written against it run unchanged over both transports (see TestDevice.swift).
protocol RegisterBlock {
    func read8(at offset: Int) -> UInt8
    func read16(at offset: Int) -> UInt16
    func read32(at offset: Int) -> UInt32
    func write8(_ value: UInt8, at offset: Int)
    func write16(_ value: UInt16, at offset: Int)
    func write32(_ value: UInt32, at offset: Int)
}

/// Registers in x86 I/O port space (`in`/`out`), starting at port `base`.
struct PortBlock: RegisterBlock {
    let base: UInt16

    private func port(_ offset: Int) -> UInt16 { base &+ UInt16(truncatingIfNeeded: offset) }

    func read8(at offset: Int) -> UInt8 { pio_read8(port(offset)) }
    func read16(at offset: Int) -> UInt16 { pio_read16(port(offset)) }
    func read32(at offset: Int) -> UInt32 { pio_read32(port(offset)) }
    func write8(_ value: UInt8, at offset: Int) { pio_write8(port(offset), value) }
    func write16(_ value: UInt16, at offset: Int) { pio_write16(port(offset), value) }
    func write32(_ value: UInt32, at offset: Int) { pio_write32(port(offset), value) }
}

/// Memory-mapped registers at guest-physical address `base` (identity-mapped by the VMM).
struct MmioBlock: RegisterBlock {
    let base: UInt64

    private func address(_ offset: Int) -> UInt64 { base &+ UInt64(truncatingIfNeeded: offset) }

    func read8(at offset: Int) -> UInt8 { mmio_read8(address(offset)) }
    func read16(at offset: Int) -> UInt16 { mmio_read16(address(offset)) }
    func read32(at offset: Int) -> UInt32 { mmio_read32(address(offset)) }
    func write8(_ value: UInt8, at offset: Int) { mmio_write8(address(offset), value) }
    func write16(_ value: UInt16, at offset: Int) { mmio_write16(address(offset), value) }
    func write32(_ value: UInt32, at offset: Int) { mmio_write32(address(offset), value) }
}

enum CPU {
    /// The time-stamp counter (`rdtsc`), for cycle counts of device round trips.
    static func timestamp() -> UInt64 { cpu_rdtsc() }

    /// Switches the machine off through the ACPI sleep control register (port 0x600):
    /// SLP_TYP = 5 (S5, soft-off) in bits 2-4 and SLP_EN (bit 5), i.e. 0x34.
    /// Should the write return, this CPU halts for good.
    static func powerOff() -> Never {
        pio_write8(0x600, 0x34)
        cpu_halt_forever()
    }
}
