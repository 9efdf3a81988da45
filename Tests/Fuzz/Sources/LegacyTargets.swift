import ActorVmm
@testable import Devices

/// The 8250 UART: register reads and writes at any offset and width (in and beyond its 8 ports) mixed
/// with host input. Invariants: reads fit their width and are one byte (or 0xFF beyond the ports); the
/// receive buffer never holds more than its capacity; input accepted never exceeds the space announced.
func uartTarget(_ bytes: [UInt8]) {
    runOnLoop(fuzzLoop) {
        var input = FuzzInput(bytes)
        let capacity = Int(input.byte() % 32) + 1
        let uart = Uart8250(loop: fuzzLoop, interrupt: NoInterrupt(), output: CheckedDiscard(), receiveCapacity: capacity)
        uart.assumeIsolated { uart in
            var steps = 0
            while !input.isEmpty, steps < 256 {
                steps += 1
                let op = input.byte(), width = 1 << Int((op >> 4) & 3)
                let offset = UInt64(op >> 6 == 3 ? input.byte() : input.byte() % 8)
                switch op & 3 {
                case 0, 1: uart.write(offset: offset, width: width, value: input.integer())
                case 2:
                    let value = uart.read(offset: offset, width: width)
                    guard value <= 0xFF else { finding("UART read \(value) at \(offset)") }
                default:
                    let before = uart.counters.bytesIn, space = uart.inputSpace
                    let data = input.take(Int(input.byte() % 48))
                    uart.enqueueInput(data)
                    let accepted = Int(uart.counters.bytesIn - before)
                    guard accepted <= space, accepted <= data.count else {
                        finding("accepted \(accepted) of \(data.count) input bytes with space \(space)")
                    }
                }
                guard uart.inputSpace >= 0, uart.inputSpace <= capacity else { finding("input space \(uart.inputSpace)") }
            }
        }
    }
}

/// The i8042: any access to its ports. Invariants: reads are 0; only the reset command asks for a stop.
func i8042Target(_ bytes: [UInt8]) {
    runOnLoop(fuzzLoop) {
        var input = FuzzInput(bytes)
        let power = CountingPower()
        let device = I8042(loop: fuzzLoop, power: power)
        var resets = 0
        device.assumeIsolated { device in
            while !input.isEmpty {
                let op = input.byte(), width = 1 << Int(op & 3), offset = UInt64(input.byte() % UInt8(I8042.size + 3))
                if op & 4 != 0 {
                    let value: UInt64 = input.integer()
                    if offset == 4 && value & 0xFF == 0xFE { resets += 1 }
                    device.write(offset: offset, width: width, value: value)
                } else {
                    guard device.read(offset: offset, width: width) == 0 else { finding("i8042 read not 0") }
                }
            }
        }
        guard power.stops.load(ordering: .relaxed) == resets else {
            finding("\(power.stops.load(ordering: .relaxed)) stop requests for \(resets) reset commands")
        }
    }
}
