// Serial.swift: the 8250/16550 UART at COM1, driven by polling (its interrupt stays off).

struct Serial: TextSink {
    /// COM1, where the VMM's UART lives (IRQ 4, unused here).
    static let com1 = Serial(registers: PortBlock(base: 0x3F8))

    let registers: PortBlock

    // Register offsets. While LCR.DLAB (bit 7) is set, offsets 0 and 1 are the divisor latch.
    static let data = 0              // THR (write) / RBR (read); DLL while DLAB
    static let interruptEnable = 1   // IER; DLM while DLAB
    static let fifoControl = 2       // FCR (write) / IIR (read)
    static let lineControl = 3       // LCR
    static let modemControl = 4      // MCR
    static let lineStatus = 5        // LSR
    static let modemStatus = 6       // MSR
    static let scratch = 7           // SCR: a byte of storage, no function
    static let divisorLow = 0        // DLL
    static let divisorHigh = 1       // DLM

    // LCR and LSR bits.
    static let lineControlDLAB: UInt8 = 0x80
    static let lineStatusTHRE: UInt8 = 0x20   // transmit holding register empty: may write THR
    static let lineStatusTEMT: UInt8 = 0x40   // transmitter completely idle

    /// Sends one byte: wait until the transmit holding register is empty, then write it.
    /// (No timeout: the VMM's UART always drains; a hang here is a VMM bug worth seeing.)
    func write(byte: UInt8) {
        while registers.read8(at: Self.lineStatus) & Self.lineStatusTHRE == 0 {}
        registers.write8(byte, at: Self.data)
    }
}
