import ActorVmm
import Devices
import EpollLoop
import Glibc
import Synchronization
import Testing

/// Counts interrupt edges; `trigger()` may come from the loop thread or a vCPU thread, hence the atomic.
private final class CountingInterrupt: InterruptSink {
    private let edges = Atomic<Int>(0)
    func trigger() { edges.add(1, ordering: .relaxed) }
    var count: Int { edges.load(ordering: .relaxed) }
}

/// Captures everything the UART transmits.
private final class CapturingOutput: SerialOutput {
    private let captured = Mutex<[UInt8]>([])
    func write(_ bytes: UnsafeRawBufferPointer) { captured.withLock { $0.append(contentsOf: bytes) } }
    var bytes: [UInt8] { captured.withLock { $0 } }
}

/// Register offsets as a driver spells them (deliberately not the device's own constants).
private enum Reg {
    static let data: UInt64 = 0, ier: UInt64 = 1, iir: UInt64 = 2, fcr: UInt64 = 2, lcr: UInt64 = 3
    static let mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7
    static let dll: UInt64 = 0, dlm: UInt64 = 1
}

extension Uart8250 {
    /// One-byte port accesses, like a driver's `inb`/`outb`.
    fileprivate func inb(_ offset: UInt64) -> UInt8 { UInt8(read(offset: offset, width: 1)) }
    fileprivate func outb(_ offset: UInt64, _ value: UInt8) { write(offset: offset, width: 1, value: UInt64(value)) }
}

@Suite struct Uart8250Tests {
    private func makeUart(_ loop: EventLoop, receiveCapacity: Int = Uart8250.defaultReceiveCapacity)
        -> (Uart8250, CountingInterrupt, CapturingOutput) {
        let irq = CountingInterrupt(), out = CapturingOutput()
        let uart = Uart8250(loop: loop, interrupt: irq, output: out, receiveCapacity: receiveCapacity)
        return (uart, irq, out)
    }

    @Test func transmittedBytesReachTheOutputInOrder() async throws {
        let loop = try EventLoop(name: "uart-output")
        defer { loop.shutdown() }
        let (uart, irq, out) = makeUart(loop)
        for byte in "hi!\n".utf8 { await uart.outb(Reg.data, byte) }
        #expect(out.bytes == Array("hi!\n".utf8))
        #expect(await uart.counters == Uart8250Counters(bytesOut: 4))
        #expect(irq.count == 0, "no interrupt while IER is 0")
    }

    @Test func divisorLatchIsStoredAndReadBack() async throws {
        let loop = try EventLoop(name: "uart-divisor")
        defer { loop.shutdown() }
        let (uart, _, out) = makeUart(loop)
        await uart.outb(Reg.lcr, 0x83)  // DLAB | 8N1
        #expect(await uart.inb(Reg.dll) == 12, "power-on default: 9600 baud")
        #expect(await uart.inb(Reg.dlm) == 0)
        await uart.outb(Reg.dll, 0x01)  // 115200 baud
        await uart.outb(Reg.dlm, 0x02)
        #expect(await uart.inb(Reg.dll) == 0x01)
        #expect(await uart.inb(Reg.dlm) == 0x02)
        #expect(out.bytes.isEmpty, "a DLL write is not a transmitted byte")

        await uart.outb(Reg.lcr, 0x03)  // DLAB off: offsets 0 and 1 are THR/RBR and IER again
        #expect(await uart.inb(Reg.ier) == 0)
        await uart.outb(Reg.data, 0x41)
        #expect(out.bytes == [0x41])
        await uart.outb(Reg.lcr, 0x80)
        #expect(await uart.inb(Reg.dll) == 0x01, "the divisor survived")
        #expect(await uart.inb(Reg.dlm) == 0x02)
    }

    @Test func controlRegistersReadBack() async throws {
        let loop = try EventLoop(name: "uart-regs")
        defer { loop.shutdown() }
        let (uart, _, _) = makeUart(loop)
        #expect(await uart.inb(Reg.lcr) == 0x03, "8N1 at power-on")
        #expect(await uart.inb(Reg.mcr) == 0x08, "OUT2 at power-on")
        await uart.outb(Reg.lcr, 0x1B)
        await uart.outb(Reg.scr, 0xA5)
        await uart.outb(Reg.ier, 0xFF)
        await uart.outb(Reg.mcr, 0xEB)
        #expect(await uart.inb(Reg.lcr) == 0x1B)
        #expect(await uart.inb(Reg.scr) == 0xA5)
        #expect(await uart.inb(Reg.ier) == 0x0F, "IER keeps its low 4 bits")
        #expect(await uart.inb(Reg.mcr) == 0x0B, "MCR keeps its low 5 bits")
    }

    @Test func lineStatusReportsEmptyTransmitterAndDataReady() async throws {
        let loop = try EventLoop(name: "uart-lsr")
        defer { loop.shutdown() }
        let (uart, _, _) = makeUart(loop)
        #expect(await uart.inb(Reg.lsr) == 0x60, "THRE | TEMT: output is immediate")
        await uart.outb(Reg.data, 0x41)
        #expect(await uart.inb(Reg.lsr) == 0x60)
        await uart.enqueueInput([0x7A])
        #expect(await uart.inb(Reg.lsr) == 0x61, "DR while input waits")
        #expect(await uart.inb(Reg.data) == 0x7A)
        #expect(await uart.inb(Reg.lsr) == 0x60)
    }

    @Test func thrEmptyInterruptIsRaisedOnEnableAndOnWrite() async throws {
        let loop = try EventLoop(name: "uart-thre")
        defer { loop.shutdown() }
        let (uart, irq, _) = makeUart(loop)
        #expect(await uart.inb(Reg.iir) == 0x01, "no interrupt")
        await uart.outb(Reg.ier, 0x02)
        #expect(irq.count == 1, "enabling THRE while THR is empty raises it")
        #expect(await uart.inb(Reg.iir) == 0x02)
        #expect(await uart.inb(Reg.iir) == 0x01, "reading IIR acknowledged THRE")

        await uart.outb(Reg.data, 0x41)
        #expect(irq.count == 2, "THR emptied again after the write")
        await uart.outb(Reg.data, 0x42)
        #expect(irq.count == 2, "still pending and unacknowledged: no second edge")
        #expect(await uart.inb(Reg.iir) == 0x02)
        await uart.outb(Reg.ier, 0x02)
        #expect(irq.count == 2, "rewriting IER with the same bit is not an enable")
        #expect(await uart.inb(Reg.iir) == 0x01)
        await uart.outb(Reg.data, 0x43)
        #expect(irq.count == 3)
        #expect(await uart.counters.interrupts == 3)
    }

    /// Linux's `serial8250_do_startup` toggles IER.THRI twice and expects IIR to report THRE both times;
    /// otherwise it marks the port `UART_BUG_THRE` and falls back to a timer.
    @Test func linuxThreProbeSeesTheInterruptReassert() async throws {
        let loop = try EventLoop(name: "uart-probe")
        defer { loop.shutdown() }
        let (uart, _, _) = makeUart(loop)
        await uart.outb(Reg.fcr, 0x01)
        await uart.outb(Reg.ier, 0x02)
        let first = await uart.inb(Reg.iir)
        await uart.outb(Reg.ier, 0x00)
        await uart.outb(Reg.ier, 0x02)
        let second = await uart.inb(Reg.iir)
        await uart.outb(Reg.ier, 0x00)
        #expect(first == 0xC2)
        #expect(second == 0xC2)
    }

    @Test func receivedDataRaisesTheInterruptOnInputAndOnEnable() async throws {
        let loop = try EventLoop(name: "uart-rx-irq")
        defer { loop.shutdown() }
        let (uart, irq, _) = makeUart(loop)
        await uart.outb(Reg.ier, 0x01)
        #expect(irq.count == 0, "nothing to receive yet")
        await uart.enqueueInput(Array("ab".utf8))
        #expect(irq.count == 1)
        #expect(await uart.inb(Reg.iir) == 0x04)
        #expect(await uart.inb(Reg.iir) == 0x04, "pending until the buffer is drained, not until IIR is read")
        await uart.enqueueInput(Array("c".utf8))
        #expect(irq.count == 1, "already pending: no second edge")
        for _ in 0..<3 { _ = await uart.inb(Reg.data) }
        #expect(await uart.inb(Reg.iir) == 0x01)
        await uart.enqueueInput(Array("d".utf8))
        #expect(irq.count == 2)

        await uart.outb(Reg.ier, 0x00)
        #expect(await uart.inb(Reg.iir) == 0x01, "disabled sources are not reported")
        await uart.outb(Reg.ier, 0x01)
        #expect(irq.count == 3, "enabling with data waiting raises an edge")
        #expect(await uart.counters == Uart8250Counters(bytesIn: 4, interrupts: 3))
    }

    @Test func iirReportsReceivedDataBeforeTransmitterEmpty() async throws {
        let loop = try EventLoop(name: "uart-priority")
        defer { loop.shutdown() }
        let (uart, irq, _) = makeUart(loop)
        await uart.outb(Reg.ier, 0x03)
        await uart.enqueueInput([0x78])
        #expect(irq.count == 2, "one edge per source that became pending")
        #expect(await uart.inb(Reg.iir) == 0x04)
        #expect(await uart.inb(Reg.iir) == 0x04, "reporting RX did not acknowledge THRE")
        #expect(await uart.inb(Reg.data) == 0x78)
        #expect(await uart.inb(Reg.iir) == 0x02)
        #expect(await uart.inb(Reg.iir) == 0x01)
    }

    @Test func receiveBufferPopsInOrderAcrossTheRingWrap() async throws {
        let loop = try EventLoop(name: "uart-rbr")
        defer { loop.shutdown() }
        let (uart, _, _) = makeUart(loop, receiveCapacity: 4)
        await uart.enqueueInput([1, 2, 3])
        #expect(await uart.inb(Reg.data) == 1)
        #expect(await uart.inb(Reg.data) == 2)
        await uart.enqueueInput([4, 5, 6])  // wraps around the end of the storage
        var received: [UInt8] = []
        while await uart.inb(Reg.lsr) & 0x01 != 0 { received.append(await uart.inb(Reg.data)) }
        #expect(received == [3, 4, 5, 6])
        #expect(await uart.inb(Reg.data) == 0, "RBR reads 0 when empty")
        #expect(await uart.counters.overruns == 0)
    }

    @Test func fifoEnableShowsInIIR() async throws {
        let loop = try EventLoop(name: "uart-fifo")
        defer { loop.shutdown() }
        let (uart, _, _) = makeUart(loop)
        #expect(await uart.inb(Reg.iir) == 0x01)
        await uart.outb(Reg.fcr, 0xC1)  // enable, trigger level 14
        #expect(await uart.inb(Reg.iir) == 0xC1, "bits 7:6 = 0b11: a 16550A")
        await uart.outb(Reg.ier, 0x02)
        #expect(await uart.inb(Reg.iir) == 0xC2)
        await uart.outb(Reg.fcr, 0x00)
        #expect(await uart.inb(Reg.iir) == 0x01)
    }

    @Test func fifoControlClearsTheReceiveBuffer() async throws {
        let loop = try EventLoop(name: "uart-fcr")
        defer { loop.shutdown() }
        let (uart, _, _) = makeUart(loop, receiveCapacity: 8)
        await uart.outb(Reg.fcr, 0x01)
        await uart.enqueueInput(Array("abc".utf8))
        #expect(await uart.inb(Reg.lsr) == 0x61)
        await uart.outb(Reg.fcr, 0x03)  // keep enabled, clear RX
        #expect(await uart.inb(Reg.lsr) == 0x60)
        #expect(await uart.inputSpace == 8)
        #expect(await uart.inb(Reg.iir) == 0xC1, "FIFOs still enabled")
        await uart.enqueueInput(Array("d".utf8))
        await uart.outb(Reg.fcr, 0x00)  // disabling the FIFOs clears them too
        #expect(await uart.inb(Reg.lsr) == 0x60)
    }

    @Test func loopbackFeedsTransmitterToReceiverAndModemOutputsToInputs() async throws {
        let loop = try EventLoop(name: "uart-loopback")
        defer { loop.shutdown() }
        let (uart, irq, out) = makeUart(loop)
        #expect(await uart.inb(Reg.msr) == 0xB0, "DCD | DSR | CTS")
        await uart.outb(Reg.mcr, 0x1A)  // Linux's probe: LOOP | OUT2 | RTS
        #expect(await uart.inb(Reg.msr) == 0x90, "DCD | CTS")
        await uart.outb(Reg.mcr, 0x1F)
        #expect(await uart.inb(Reg.msr) == 0xF0)
        await uart.outb(Reg.mcr, 0x10)
        #expect(await uart.inb(Reg.msr) == 0x00)

        #expect(await !uart.canAcceptInput, "the receiver is not listening to the line")
        await uart.outb(Reg.ier, 0x01)
        await uart.outb(Reg.data, 0x55)
        #expect(out.bytes.isEmpty)
        #expect(irq.count == 1)
        #expect(await uart.inb(Reg.lsr) == 0x61)
        #expect(await uart.inb(Reg.data) == 0x55)
        await uart.enqueueInput([0x01])
        #expect(await uart.inb(Reg.lsr) == 0x60, "line input is lost in loopback")

        await uart.outb(Reg.mcr, 0x0B)
        #expect(await uart.inb(Reg.msr) == 0xB0)
        #expect(await uart.canAcceptInput)
        #expect(await uart.counters == Uart8250Counters(bytesOut: 0, bytesIn: 0, interrupts: 1, overruns: 1))
    }

    @Test func overrunIsCountedAndBackPressureIsReported() async throws {
        let loop = try EventLoop(name: "uart-overrun")
        defer { loop.shutdown() }
        let (uart, _, _) = makeUart(loop, receiveCapacity: 4)
        #expect(await uart.inputSpace == 4)
        await uart.enqueueInput([1, 2, 3])
        #expect(await uart.inputSpace == 1)
        #expect(await uart.canAcceptInput)
        await uart.enqueueInput([4, 5, 6])
        #expect(await !uart.canAcceptInput)
        #expect(await uart.counters == Uart8250Counters(bytesIn: 4, overruns: 2))
        #expect(await uart.inb(Reg.lsr) == 0x63, "DR | OE")
        #expect(await uart.inb(Reg.lsr) == 0x61, "OE clears when LSR is read")
        #expect(await uart.inb(Reg.data) == 1)
        #expect(await uart.canAcceptInput)
        var rest: [UInt8] = []
        for _ in 0..<3 { rest.append(await uart.inb(Reg.data)) }
        #expect(rest == [2, 3, 4], "the newest bytes were the ones lost")
    }

    @Test func widerAccessesActOnTheAddressedByte() async throws {
        let loop = try EventLoop(name: "uart-width")
        defer { loop.shutdown() }
        let (uart, _, out) = makeUart(loop)
        await uart.write(offset: Reg.scr, width: 2, value: 0x1234)
        #expect(await uart.read(offset: Reg.scr, width: 4) == 0x34)
        #expect(await uart.read(offset: Reg.lsr, width: 2) == 0x60)
        await uart.write(offset: Reg.data, width: 4, value: 0x4443_4241)
        #expect(out.bytes == [0x41], "one byte per access")
    }

    @Test func offsetsBeyondTheUartAreIgnored() async throws {
        let loop = try EventLoop(name: "uart-range")
        defer { loop.shutdown() }
        let (uart, irq, out) = makeUart(loop)
        #expect(await uart.read(offset: 8, width: 1) == 0xFF)
        #expect(await uart.read(offset: .max, width: 1) == 0xFF)
        await uart.write(offset: 8, width: 1, value: 0x41)
        await uart.write(offset: 9, width: 1, value: 0x02)
        await uart.write(offset: .max, width: 1, value: 0x41)
        #expect(out.bytes.isEmpty)
        #expect(irq.count == 0)
        #expect(await uart.inb(Reg.scr) == 0)
        #expect(await uart.counters == Uart8250Counters())
    }

    /// The vCPU fast path: a thread that is not the loop claims the idle loop and runs the access itself,
    /// under the UART's isolation (`assumeIsolated` holds because the UART's executor is `loop`).
    @Test func aVcpuThreadAccessesTheUartInlineWhenTheLoopIsIdle() throws {
        let loop = try EventLoop(name: "uart-inline")
        defer { loop.shutdown() }
        let (uart, irq, out) = makeUart(loop)
        func inline<R: Sendable>(_ body: (isolated Uart8250) -> R) -> R {
            while true {
                if let result = loop.runIfIdle({ uart.assumeIsolated(body) }) { return result }
                sched_yield()  // the loop thread holds it for a moment
            }
        }
        #expect(!loop.inLoopThread)
        inline { $0.outb(Reg.ier, 0x02) }
        inline { $0.outb(Reg.data, 0x6F) }
        inline { $0.outb(Reg.data, 0x6B) }
        #expect(inline { $0.inb(Reg.iir) } == 0x02)
        #expect(out.bytes == Array("ok".utf8))
        #expect(irq.count == 1)
    }

    /// The host input path: a handler on the loop thread (the terminal's fd handler in the VMM) enters the
    /// UART with `assumeIsolated`; the guest's accesses queue behind it on the same loop.
    @Test func inputFromALoopHandlerReachesTheGuest() async throws {
        let loop = try EventLoop(name: "uart-loop-input")
        defer { loop.shutdown() }
        let (uart, irq, _) = makeUart(loop)
        await uart.outb(Reg.ier, 0x01)
        loop.execute {
            let space = uart.assumeIsolated { $0.inputSpace }
            let line = Array("ls\n".utf8)
            uart.assumeIsolated { $0.enqueueInput(line.prefix(space)) }
        }
        var received: [UInt8] = []
        for _ in 0..<3 { received.append(await uart.inb(Reg.data)) }
        #expect(received == Array("ls\n".utf8))
        #expect(irq.count == 1)
    }
}
