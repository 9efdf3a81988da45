import ActorVmm
import EpollLoop

/// What a ``Uart8250`` has done so far. All counts wrap instead of trapping: the guest drives them.
public struct Uart8250Counters: Sendable, Equatable {
    /// Bytes the guest transmitted to the output (loopback bytes are not output).
    public var bytesOut: UInt64
    /// Host input bytes accepted into the receive buffer.
    public var bytesIn: UInt64
    /// Interrupt edges sent to the ``InterruptSink``.
    public var interrupts: UInt64
    /// Bytes lost on input: the receive buffer was full, or the UART was in loopback mode (its receiver
    /// then listens to its own transmitter, not to the line).
    public var overruns: UInt64

    public init(bytesOut: UInt64 = 0, bytesIn: UInt64 = 0, interrupts: UInt64 = 0, overruns: UInt64 = 0) {
        self.bytesOut = bytesOut
        self.bytesIn = bytesIn
        self.interrupts = interrupts
        self.overruns = overruns
    }
}

/// The 16550A-compatible UART of a PC's COM1 (ports 0x3F8–0x3FF, IRQ 4), the guest's first console.
///
/// The register set is what Linux's 8250 driver probes for and uses (it detects a "16550A"); the semantics
/// follow the National Semiconductor data sheet, simplified for a virtual line: a transmitted byte leaves at
/// once, so the transmitter is always empty, and the line never has errors except overrun.
///
/// ## Concurrency
/// The UART is an actor whose executor is its ``loop`` (``LoopBound`` supplies `unownedExecutor`). Every
/// method runs under the actor's isolation, on one of two kinds of thread:
/// - the loop thread, running an enqueued job (`await uart.read(...)`) or an fd handler such as terminal
///   input, registered with `uart.register(fd:)` and run inside the actor (no Task, no hop);
/// - a vCPU thread that found the loop idle and claimed it (`EventLoop.runIfIdle`) to handle a PIO exit
///   inline.
///
/// Either way exactly one thread touches the registers at a time, so the state below is plain stored
/// properties: no locks, no atomics. The UART calls out only to injected `Sendable` collaborators,
/// `InterruptSink.trigger()` (an eventfd write for `KVM_IRQFD`) and `SerialOutput.write(_:)`, synchronously,
/// on whichever thread holds the isolation.
///
/// ## Interrupts
/// Two sources, in IIR priority order: received data available (IER bit 0, pending while the receive buffer
/// is not empty) and transmitter holding register empty (IER bit 1, a latch set when THR is written or its
/// interrupt is enabled, cleared when IIR reports it). The line is edge-triggered, so the UART sends one
/// edge whenever an enabled source *becomes* pending; a guest's handler reads IIR until it says "none", so
/// it sees every source that was already pending without another edge.
public actor Uart8250: BusDevice {
    /// COM1's first I/O port; the UART occupies ``size`` ports from here.
    public static let port: UInt64 = 0x3F8
    public static let size: UInt64 = 8

    /// Receive buffer size. Larger than the 16550A's 16-byte FIFO on purpose: this buffer also stands in for
    /// the line, so pasted input waits here (handed over in a few large reads) rather than in the terminal.
    /// The guest cannot tell: it reads RBR while LSR.DR is set, however deep the FIFO is. 1 KiB stays bounded.
    public static let defaultReceiveCapacity = 1024

    public nonisolated let loop: EventLoop
    let interrupt: any InterruptSink
    let output: any SerialOutput

    public private(set) var counters = Uart8250Counters()

    // MARK: Registers (names as in the data sheet)

    var divisorLow: UInt8 = 12  // DLL: 115200 / 12 = 9600 baud, the power-on default
    var divisorHigh: UInt8 = 0  // DLM
    var interruptEnable: UInt8 = 0  // IER, low 4 bits
    var lineControl: UInt8 = 0x03  // LCR: 8 data bits, no parity, 1 stop bit
    var modemControl: UInt8 = MCR.out2  // MCR: OUT2 gates the IRQ line on PCs
    var scratch: UInt8 = 0  // SCR
    var fifoEnabled = false  // FCR bit 0, reported in IIR bits 7:6
    var thrEmptyPending = false  // the THRE interrupt latch
    var overrunLatched = false  // LSR bit 1, cleared when LSR is read

    // MARK: Receive buffer: a ring over storage allocated once, so neither input nor RBR reads allocate

    var receiveStorage: [UInt8]
    var receiveHead = 0
    var receiveCount = 0
    /// Quiesced for a snapshot: no input is taken (``inputSpace`` is 0, so the host keeps it).
    var quiesced = false

    /// Creates a UART whose interrupt goes to `interrupt` and whose output goes to `output`.
    public init(loop: EventLoop, interrupt: any InterruptSink, output: any SerialOutput,
                receiveCapacity: Int = Uart8250.defaultReceiveCapacity) {
        precondition(receiveCapacity > 0, "a UART needs room for at least one received byte")
        self.loop = loop
        self.interrupt = interrupt
        self.output = output
        receiveStorage = [UInt8](repeating: 0, count: receiveCapacity)
    }

    // MARK: - Host side: input and back-pressure

    /// How many bytes ``enqueueInput(_:)`` can accept now. 0 while the buffer is full or in loopback mode:
    /// the host should then leave input in the terminal and look again later, rather than lose it.
    public var inputSpace: Int { isLoopback || quiesced ? 0 : receiveStorage.count - receiveCount }

    /// Whether ``enqueueInput(_:)`` would accept at least one byte.
    public var canAcceptInput: Bool { inputSpace > 0 }

    /// Appends host input to the receive buffer and raises the received-data interrupt if it is enabled.
    /// Bytes beyond ``inputSpace`` are lost: they set LSR's overrun bit and count as overruns in ``counters``
    /// (in loopback mode every input byte is lost and counted, but LSR is untouched: the line is not heard).
    public func enqueueInput(_ bytes: some Sequence<UInt8>) {
        let before = activeSources
        for byte in bytes {
            if isLoopback {
                counters.overruns &+= 1  // the receiver is connected to the transmitter, not to the line
            } else if receive(byte) {
                counters.bytesIn &+= 1
            }
        }
        raiseIfNewlyActive(since: before)
    }

    // MARK: - Guest side: the bus

    /// Reads the register at `offset`. Wider accesses read the byte at `offset`, zero-extended; offsets
    /// outside the UART read 0xFF, like an empty ISA port.
    public func read(offset: UInt64, width: Int) -> UInt64 {
        guard offset < Self.size else { return 0xFF }
        let byte: UInt8 = switch Int(offset) {
        case Offset.divisorLow where isDivisorLatchSelected: divisorLow
        case Offset.divisorHigh where isDivisorLatchSelected: divisorHigh
        case Offset.data: popReceived()
        case Offset.interruptEnable: interruptEnable
        case Offset.interruptIdentification: identifyInterrupt()
        case Offset.lineControl: lineControl
        case Offset.modemControl: modemControl
        case Offset.lineStatus: readLineStatus()
        case Offset.modemStatus: modemStatus
        case Offset.scratch: scratch
        default: 0xFF  // unreachable: the guard keeps offsets below 8
        }
        return UInt64(byte)
    }

    /// Writes the low byte of `value` to the register at `offset`. Offsets outside the UART are ignored.
    public func write(offset: UInt64, width: Int, value: UInt64) {
        guard offset < Self.size else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        let before = activeSources
        switch Int(offset) {
        case Offset.divisorLow where isDivisorLatchSelected: divisorLow = byte
        case Offset.divisorHigh where isDivisorLatchSelected: divisorHigh = byte
        case Offset.data: transmit(byte)
        case Offset.interruptEnable: setInterruptEnable(byte)
        case Offset.fifoControl: setFifoControl(byte)
        case Offset.lineControl: lineControl = byte
        case Offset.modemControl: modemControl = byte & MCR.valid
        case Offset.scratch: scratch = byte
        default: break  // LSR and MSR are read-only
        }
        raiseIfNewlyActive(since: before)
    }

    // MARK: - Transmit

    /// THR: the byte leaves at once (to the output, or to the receiver in loopback), so THR is empty again
    /// before the write returns and its interrupt is pending again.
    private func transmit(_ byte: UInt8) {
        if isLoopback {
            _ = receive(byte)
        } else {
            withUnsafeBytes(of: byte) { output.write($0) }  // a one-byte view of a local: no allocation
            counters.bytesOut &+= 1
        }
        thrEmptyPending = true
    }

    // MARK: - Receive

    /// Appends `byte` to the receive buffer; when it is full, the byte is lost and overrun is latched.
    private func receive(_ byte: UInt8) -> Bool {
        guard receiveCount < receiveStorage.count else {
            overrunLatched = true
            counters.overruns &+= 1
            return false
        }
        receiveStorage[(receiveHead + receiveCount) % receiveStorage.count] = byte
        receiveCount += 1
        return true
    }

    /// RBR: the oldest received byte, or 0 when there is none.
    private func popReceived() -> UInt8 {
        guard receiveCount > 0 else { return 0 }
        let byte = receiveStorage[receiveHead]
        receiveHead = (receiveHead + 1) % receiveStorage.count
        receiveCount -= 1
        return byte
    }

    private func clearReceiveBuffer() {
        receiveHead = 0
        receiveCount = 0
    }

    // MARK: - Control and status registers

    private var isDivisorLatchSelected: Bool { lineControl & LCR.divisorLatchAccess != 0 }
    private var isLoopback: Bool { modemControl & MCR.loopback != 0 }

    /// IER: enabling the THRE interrupt while THR is empty (always, here) makes it pending, as on a 16550.
    /// Linux's startup test relies on this: it toggles IER bit 1 and expects IIR to report THRE again.
    private func setInterruptEnable(_ byte: UInt8) {
        let newValue = byte & IER.valid
        let enabled = newValue & ~interruptEnable
        if enabled & IER.transmitterHoldingEmpty != 0 { thrEmptyPending = true }
        interruptEnable = newValue
    }

    /// FCR: bit 0 enables the FIFOs; bit 1 clears the receive FIFO. Changing bit 0 clears both FIFOs, as the
    /// data sheet says. Transmit-side bits (clear TX, DMA mode, trigger level) have nothing to act on.
    private func setFifoControl(_ byte: UInt8) {
        let enable = byte & FCR.enable != 0
        if enable != fifoEnabled || byte & FCR.clearReceive != 0 { clearReceiveBuffer() }
        fifoEnabled = enable
    }

    /// IIR: the highest-priority active source. Reading it acknowledges THRE when THRE is what it reports;
    /// received data stays pending until the buffer is drained.
    private func identifyInterrupt() -> UInt8 {
        let active = activeSources
        var identification = IIR.noInterrupt
        if active.contains(.receivedData) {
            identification = IIR.receivedData
        } else if active.contains(.transmitterHoldingEmpty) {
            identification = IIR.transmitterHoldingEmpty
            thrEmptyPending = false
        }
        return identification | (fifoEnabled ? IIR.fifosEnabled : 0)
    }

    /// LSR: the transmitter is always empty; data ready while input waits; overrun once, then cleared.
    private func readLineStatus() -> UInt8 {
        var status = LSR.transmitterHoldingEmpty | LSR.transmitterEmpty
        if receiveCount > 0 { status |= LSR.dataReady }
        if overrunLatched {
            status |= LSR.overrun
            overrunLatched = false
        }
        return status
    }

    /// MSR: a modem that is present and ready (DCD, DSR, CTS). In loopback, the modem inputs are wired to
    /// the MCR outputs instead, which Linux checks when probing: CTS←RTS, DSR←DTR, RI←OUT1, DCD←OUT2.
    private var modemStatus: UInt8 {
        guard isLoopback else { return MSR.dataCarrierDetect | MSR.dataSetReady | MSR.clearToSend }
        var status: UInt8 = 0
        if modemControl & MCR.requestToSend != 0 { status |= MSR.clearToSend }
        if modemControl & MCR.dataTerminalReady != 0 { status |= MSR.dataSetReady }
        if modemControl & MCR.out1 != 0 { status |= MSR.ringIndicator }
        if modemControl & MCR.out2 != 0 { status |= MSR.dataCarrierDetect }
        return status
    }

    // MARK: - Interrupt line

    /// Interrupt sources that are both enabled in IER and pending.
    private struct Sources: OptionSet {
        let rawValue: UInt8
        static let receivedData = Sources(rawValue: 1 << 0)
        static let transmitterHoldingEmpty = Sources(rawValue: 1 << 1)
    }

    private var activeSources: Sources {
        var sources: Sources = []
        if interruptEnable & IER.receivedData != 0 && receiveCount > 0 { sources.insert(.receivedData) }
        if interruptEnable & IER.transmitterHoldingEmpty != 0 && thrEmptyPending {
            sources.insert(.transmitterHoldingEmpty)
        }
        return sources
    }

    /// Sends one edge if the access that just ran made a source active that was not active `before`. Every
    /// state change goes through `write` or `enqueueInput`, which call this once; reads only clear sources.
    private func raiseIfNewlyActive(since before: Sources) {
        guard !activeSources.isSubset(of: before) else { return }
        counters.interrupts &+= 1
        interrupt.trigger()
    }
}

// MARK: - Register offsets and bits (16550A data sheet names)

private enum Offset {
    static let data = 0  // RBR (read) / THR (write)
    static let interruptEnable = 1  // IER
    static let interruptIdentification = 2  // IIR (read)
    static let fifoControl = 2  // FCR (write)
    static let lineControl = 3  // LCR
    static let modemControl = 4  // MCR
    static let lineStatus = 5  // LSR
    static let modemStatus = 6  // MSR
    static let scratch = 7  // SCR
    static let divisorLow = 0  // DLL, while LCR.DLAB is set
    static let divisorHigh = 1  // DLM, while LCR.DLAB is set
}

private enum IER {
    static let receivedData: UInt8 = 0x01  // ERBFI
    static let transmitterHoldingEmpty: UInt8 = 0x02  // ETBEI
    static let valid: UInt8 = 0x0F  // the two above, receiver line status and modem status
}

private enum IIR {
    static let noInterrupt: UInt8 = 0x01
    static let transmitterHoldingEmpty: UInt8 = 0x02
    static let receivedData: UInt8 = 0x04
    static let fifosEnabled: UInt8 = 0xC0  // bits 7:6 = 0b11 identify a 16550A with working FIFOs
}

private enum FCR {
    static let enable: UInt8 = 0x01
    static let clearReceive: UInt8 = 0x02
}

private enum LCR {
    static let divisorLatchAccess: UInt8 = 0x80  // DLAB
}

private enum MCR {
    static let dataTerminalReady: UInt8 = 0x01
    static let requestToSend: UInt8 = 0x02
    static let out1: UInt8 = 0x04
    static let out2: UInt8 = 0x08
    static let loopback: UInt8 = 0x10
    static let valid: UInt8 = 0x1F  // bits 7:5 read as 0 on a 16550A
}

private enum LSR {
    static let dataReady: UInt8 = 0x01
    static let overrun: UInt8 = 0x02
    static let transmitterHoldingEmpty: UInt8 = 0x20  // THRE
    static let transmitterEmpty: UInt8 = 0x40  // TEMT
}

private enum MSR {
    static let clearToSend: UInt8 = 0x10
    static let dataSetReady: UInt8 = 0x20
    static let ringIndicator: UInt8 = 0x40
    static let dataCarrierDetect: UInt8 = 0x80
}
