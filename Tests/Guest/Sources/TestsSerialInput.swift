// TestsSerialInput.swift: checks that only make sense with a person (or a test playing one) at the
// host's end of the serial port. They run only when named in `tests=`, never by default.

/// `serialin`: terminal input through the UART, polled as a simple driver does. Prints
/// `SERIALIN READY` on its own line, then reads bytes (LSR.DR) until a carriage return or line
/// feed arrives, keeping up to 32 bytes, for at most ~1e11 TSC cycles (tens of seconds).
/// Detail: `got=<hex of each byte>`; passes when a line ending arrived.
func serialInputTest(_ context: inout TestContext) -> Bool {
    var console = Serial.com1
    console.write("SERIALIN READY\n")
    let uart = Serial.com1.registers
    let dataReady: UInt8 = 0x01
    let deadline = CPU.timestamp() &+ 100_000_000_000
    context.detail.write("got=")
    var kept = 0
    while CPU.timestamp() < deadline {
        guard uart.read8(at: Serial.lineStatus) & dataReady != 0 else { continue }
        let byte = uart.read8(at: Serial.data)
        if byte == 0x0D || byte == 0x0A { return kept > 0 }
        if kept < 32 {
            context.detail.write(hex: byte, digits: 2)
            kept += 1
        }
    }
    context.detail.write(" timeout")
    return false
}

/// `serialflood`: writes `flood_bytes` bytes (default 256 KiB) of text to the UART as fast as it
/// takes them, in 64-byte lines, so a host reader that does not keep up is overrun. Passes when
/// every byte was sent (the UART never stopped taking them).
func serialFloodTest(_ context: inout TestContext) -> Bool {
    let total = context.boot.commandLine.commandLineValue(of: "flood_bytes").flatMap { $0.parsedUnsigned() } ?? 262_144
    let console = Serial.com1
    var sent: UInt64 = 0
    while sent < total {
        console.write(byte: sent % 64 == 63 ? 0x0A : UInt8(ascii: "a") &+ UInt8(truncatingIfNeeded: (sent / 64) % 26))
        sent += 1
    }
    context.detail.write("bytes=")
    context.detail.write(decimal: sent)
    return true
}
