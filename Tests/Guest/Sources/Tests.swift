// Tests.swift: the table of checks, and the small ones (serial, cmdline).
//
// Adding a check: write `func fooTest(_ context: inout TestContext) -> Bool` (in a file of
// its own if it is big, like TestDevice.swift), and add a line to `allTests`.

/// What a check is given: the boot information, and a line for its detail text, printed
/// after PASS/FAIL (keep it short, `key=value` pairs separated by spaces).
struct TestContext {
    let boot: BootParams
    var detail = LineBuffer()
}

/// One named check. `run` writes its detail text and returns whether it passed.
struct GuestTest: Sendable {
    let name: StaticString
    let run: @Sendable (inout TestContext) -> Bool
    /// Runs only when `tests=` names it (it waits for the host, or floods it).
    var byNameOnly = false
}

/// Every check the guest knows, in the order used when the command line names none.
let allTests: [GuestTest] = [
    GuestTest(name: "serial", run: serialTest),
    GuestTest(name: "cmdline", run: commandLineTest),
    GuestTest(name: "pio", run: portTestDeviceTest),
    GuestTest(name: "mmio", run: mmioTestDeviceTest),
    GuestTest(name: "pci", run: pciTest),
    GuestTest(name: "blk", run: blkTest),
    GuestTest(name: "rng", run: rngTest),
    GuestTest(name: "console", run: consoleTest),
    GuestTest(name: "net", run: netTest),
    GuestTest(name: "bench-pio", run: benchPortTest),
    GuestTest(name: "bench-mmio", run: benchMmioTest),
    GuestTest(name: "bench-notify", run: benchNotifyTest),
    GuestTest(name: "bench-ipi", run: benchSelfIpiTest),
    GuestTest(name: "bench-blk", run: benchBlkTest),
    GuestTest(name: "serialin", run: serialInputTest, byNameOnly: true),
    GuestTest(name: "serialflood", run: serialFloodTest, byNameOnly: true),
    GuestTest(name: "snapcount", run: snapshotCountTest, byNameOnly: true),
    GuestTest(name: "hotplug", run: hotplugTest, byNameOnly: true),
    GuestTest(name: "dirty", run: dirtyTest, byNameOnly: true),
    GuestTest(name: "virtiomem", run: virtioMemTest, byNameOnly: true),
]

/// `serial`: programs the UART the way an OS driver does, checking what reads back.
/// The result line itself is then the check that transmitting (LSR polling) still works.
func serialTest(_ context: inout TestContext) -> Bool {
    let uart = Serial.com1.registers
    uart.write8(0x00, at: Serial.interruptEnable)                 // no UART interrupts
    uart.write8(Serial.lineControlDLAB, at: Serial.lineControl)   // expose the divisor latch
    uart.write8(1, at: Serial.divisorLow)                         // divisor 1: 115200 baud
    uart.write8(0, at: Serial.divisorHigh)
    let divisorLow = uart.read8(at: Serial.divisorLow)
    let divisorHigh = uart.read8(at: Serial.divisorHigh)
    uart.write8(0x03, at: Serial.lineControl)                     // 8 data bits, no parity, 1 stop; DLAB off
    let lineControl = uart.read8(at: Serial.lineControl)
    uart.write8(0x07, at: Serial.fifoControl)                     // enable FIFOs, clear both
    uart.write8(0x0B, at: Serial.modemControl)                    // DTR | RTS | OUT2

    var scratchOK = true
    for pattern: UInt8 in [0x5A, 0xA5] {
        uart.write8(pattern, at: Serial.scratch)
        scratchOK = scratchOK && uart.read8(at: Serial.scratch) == pattern
    }

    // Nothing is being sent now, so the transmitter should soon report itself empty and idle.
    let idle = Serial.lineStatusTHRE | Serial.lineStatusTEMT
    var lineStatus = uart.read8(at: Serial.lineStatus)
    var polls = 0
    while lineStatus & idle != idle && polls < 100_000 {
        lineStatus = uart.read8(at: Serial.lineStatus)
        polls += 1
    }

    context.detail.write("dll=")
    context.detail.write(decimal: divisorLow)
    context.detail.write(" dlm=")
    context.detail.write(decimal: divisorHigh)
    context.detail.write(" lcr=")
    context.detail.write(hex: lineControl, digits: 2)
    context.detail.write(scratchOK ? " scr=ok" : " scr=bad")
    context.detail.write(" lsr=")
    context.detail.write(hex: lineStatus, digits: 2)
    return divisorLow == 1 && divisorHigh == 0 && lineControl == 0x03 && scratchOK
        && lineStatus & idle == idle
}

/// `cmdline`: echoes the command line found through boot_params.
func commandLineTest(_ context: inout TestContext) -> Bool {
    guard context.boot.address != 0 else {
        context.detail.write("no boot_params")
        return false
    }
    guard context.boot.commandLineAddress != 0 else {
        context.detail.write("cmd_line_ptr=0")
        return false
    }
    context.detail.write(bytes: context.boot.commandLine)
    return true
}
