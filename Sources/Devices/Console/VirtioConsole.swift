import ActorVmm
import EpollLoop
import Glibc

/// virtio-console (virtio 1.2 §5.3) with one port, hvc0: transmitq0 goes to `output`; bytes readable on
/// `inputFD` (a terminal or a pty master) go to receiveq0.
///
/// Back-pressure: when the guest has posted no receive buffer, the device stops watching `inputFD` (input
/// waits in the host's terminal or pty) and watches it again when the guest posts buffers.
public final class VirtioConsole: VirtioDeviceModel {
    static let receiveQueue = 0, transmitQueue = 1
    /// The largest piece handed to the output at once.
    static let maxTransmit = 64 * 1024

    public let deviceType = VirtioDeviceType.console
    public let queueCount = 2
    public let deviceFeatures: UInt64 = 0
    public let configSize = 12
    let output: any SerialOutput
    let inputFD: Int32?
    var input: HostWatch?
    var inputEnded = false
    public private(set) var bytesOut: UInt64 = 0

    public init(output: any SerialOutput, inputFD: Int32?) {
        self.output = output
        self.inputFD = inputFD
        input = inputFD.map { HostWatch(fd: $0) }
    }

    public func readConfig(offset: Int, width: Int) -> UInt64 {
        var c: [UInt8] = []
        appendLE(&c, UInt16(0))  // cols
        appendLE(&c, UInt16(0))  // rows
        appendLE(&c, UInt32(1))  // max_nr_ports
        appendLE(&c, UInt32(0))  // emerg_wr
        return readLE(c, offset: offset, width: width)
    }

    public func activate(device: isolated VirtioPciDevice) throws(VirtioError) {
        watchInput(device: device)
    }

    public func reset(device: isolated VirtioPciDevice) {
        input?.stop(device: device)
    }

    public func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        if index == Self.transmitQueue {
            device.drain(queue: Self.transmitQueue) { chain in
                transmit(chain, device: device)
                device.complete(chain, queue: Self.transmitQueue, written: 0)
                return true
            }
        } else {
            watchInput(device: device)  // the guest posted receive buffers
            receive(device: device)
        }
    }

    /// Writes every readable byte of `chain` to the output, straight from guest memory, in pieces of at
    /// most `maxTransmit` bytes (nothing is cut: a buffer of any length goes out whole).
    private func transmit(_ chain: borrowing DescriptorChain, device: isolated VirtioPciDevice) {
        for buffer in chain.readable {
            var done = 0
            while done < Int(buffer.length) {
                let count = min(Int(buffer.length) - done, Self.maxTransmit)
                let at = GuestAddress(buffer.address.rawValue + UInt64(done))
                guard (try? device.memory.withHostBytes(at: at, count: count, { output.write(UnsafeRawBufferPointer($0)) })) != nil else {
                    device.countError()  // validated at pop, so only a guest that changed its memory map
                    return
                }
                done += count
                bytesOut &+= UInt64(count)
                device.countRead(count)
            }
        }
    }

    public func hostEvent(_ token: Int, device: isolated VirtioPciDevice) {
        receive(device: device)
    }

    /// Quiesced: input is not read (it waits in the terminal or pty).
    public func quiesce(device: isolated VirtioPciDevice) {
        input?.stop(device: device)
    }

    public func resume(device: isolated VirtioPciDevice) {
        guard device.isActive else { return }
        watchInput(device: device)
        receive(device: device)
    }

    private func watchInput(device: isolated VirtioPciDevice) {
        guard !inputEnded else { return }
        input?.start(device: device)
    }

    /// Moves pending input into receive buffers until either runs out, or the turn's cap (the queue size)
    /// is reached: then the rest waits for the next turn (the input stays readable).
    private func receive(device: isolated VirtioPciDevice) {
        guard let inputFD, input?.isWatching == true else { return }
        var budget = device.queueSize(Self.receiveQueue)
        while budget > 0 {
            budget -= 1
            guard let chain = device.popRequest(queue: Self.receiveQueue) else {
                if device.awaitBuffers(queue: Self.receiveQueue) { continue }
                input?.stop(device: device)  // no buffer: watched again when the guest posts some
                break
            }
            guard chain.readable.isEmpty, chain.writableLength > 0 else {
                // Not a receive buffer (read-only or empty): the driver's fault; give it back unused and go on.
                device.countError()
                device.complete(chain, queue: Self.receiveQueue, written: 0)
                continue
            }
            var buffer = [UInt8](repeating: 0, count: min(chain.writableLength, 4096))
            let n = buffer.withUnsafeMutableBytes { read(inputFD, $0.baseAddress, $0.count) }
            if n <= 0 {
                device.putBack(chain, queue: Self.receiveQueue)
                if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    // End of input (or a closed pty): stop watching for good.
                    input?.stop(device: device)
                    inputEnded = n == 0
                }
                break
            }
            let written = (try? chain.writeBytes(Array(buffer[0..<n]), memory: device.memory)) ?? 0
            device.complete(chain, queue: Self.receiveQueue, written: UInt32(written))
        }
        device.interruptIfNeeded(queue: Self.receiveQueue)
    }
}
