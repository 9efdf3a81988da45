import ActorVmm

/// The UART's part in a snapshot: its registers and the receive buffer's contents, captured and restored
/// on the UART's own executor. Quiesced, it takes no host input (``inputSpace`` is 0, so input waits in
/// the terminal); the guest cannot touch it either, since the vCPUs are paused first.
///
/// State (version 1 of the device state): DLL, DLM, IER, LCR, MCR, SCR (u8 each) | FIFO enabled, THRE
/// latch, overrun latch (bool each) | received bytes (blob, oldest first).
extension Uart8250: Snapshottable {
    public nonisolated var snapshotID: String { "serial" }

    public func quiesce() { quiesced = true }

    public func resume() { quiesced = false }

    public func captureState() -> [UInt8] {
        var out = SnapshotEncoder()
        for register in [divisorLow, divisorHigh, interruptEnable, lineControl, modemControl, scratch] { out.u8(register) }
        out.bool(fifoEnabled)
        out.bool(thrEmptyPending)
        out.bool(overrunLatched)
        out.blob((0..<receiveCount).map { receiveStorage[(receiveHead + $0) % receiveStorage.count] })
        return out.bytes
    }

    public func restoreState(_ bytes: [UInt8]) throws(SnapshotError) {
        var input = SnapshotDecoder(bytes, context: "device 'serial'")
        let registers = try (0..<6).map { _ throws(SnapshotError) in try input.u8() }
        let fifo = try input.bool(), thre = try input.bool(), overrun = try input.bool()
        let received = try input.blob(limit: receiveStorage.count)
        try input.finish()
        divisorLow = registers[0]
        divisorHigh = registers[1]
        interruptEnable = registers[2] & 0x0F
        lineControl = registers[3]
        modemControl = registers[4] & 0x1F
        scratch = registers[5]
        fifoEnabled = fifo
        thrEmptyPending = thre
        overrunLatched = overrun
        receiveHead = 0
        receiveCount = received.count
        for (index, byte) in received.enumerated() { receiveStorage[index] = byte }
        quiesced = true
    }
}
