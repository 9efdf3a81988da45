import Devices
import EpollLoop
import Glibc
import Synchronization

/// Feeds terminal input to the UART, on the UART's loop and inside the UART actor. When the UART's receive
/// buffer is full it stops watching stdin and looks again a little later, so input waits in the terminal
/// instead of being dropped.
final class StdinPump: Sendable {
    let fd: Int32
    let uart: Uart8250
    let state = Mutex<(registration: Registration?, stopped: Bool)>((registration: nil, stopped: false))

    init(fd: Int32, uart: Uart8250) throws {
        self.fd = fd
        self.uart = uart
        try watch()
    }

    private func watch() throws(Errno) {
        let registration = try uart.register(fd: fd) { [self] uart, _ in readable(uart) }
        state.withLock { $0.registration = registration }
    }

    private func readable(_ uart: isolated Uart8250) {
        let space = uart.inputSpace
        guard space > 0 else {
            pause()
            uart.schedule(after: .milliseconds(5)) { [self] _ in
                if !state.withLock({ $0.stopped }) { try? watch() }
            }
            return
        }
        var buffer = [UInt8](repeating: 0, count: min(space, 256))
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else {
            if n == 0 || (errno != EINTR && errno != EAGAIN) { pause() }  // EOF or error: stop reading
            return
        }
        uart.enqueueInput(buffer[0..<n])
    }

    private func pause() {
        if let registration = state.withLock({ state -> Registration? in
            defer { state.registration = nil }
            return state.registration
        }) {
            uart.loop.deregister(registration)
        }
    }

    func stop() {
        state.withLock { $0.stopped = true }
        pause()
    }
}
