import ActorVmm
import Boot
import CKvm
import Devices
import EpollLoop
import Glibc
import Synchronization

/// A running VM and everything that must be torn down with it, in order.
struct Machine {
    let vm: Vm
    let manager: VcpuManager
    let deviceLoop: EventLoop
    let controlLoop: EventLoop
    let stopLatch: StopLatch
    let serial: Uart8250?
    let buses: IoBuses

    /// Builds the VM described by `config` on top of already-loaded `memory`; `stopLatch` hears when the
    /// guest stops it. Host failures here are VMM faults (exit code 1, API status 500); all user-input
    /// checks happened before. On failure the loops it started are shut down again.
    static func build(config: VmConfig, memory: GuestMemory, boot: BootSetup,
                      serialOutput: (any SerialOutput)?, stopLatch: StopLatch) throws -> Machine {
        let kvm = try Kvm()
        let vm = try Vm(kvm: kvm, memory: memory, options: VmOptions(pit: true))
        let deviceLoop = try EventLoop(name: "vmm-devices")
        let controlLoop: EventLoop
        do {
            controlLoop = try EventLoop(name: "vmm-control")
        } catch {
            deviceLoop.shutdown()
            throw error
        }
        do {
            return try build(config: config, vm: vm, boot: boot, serialOutput: serialOutput, stopLatch: stopLatch,
                             deviceLoop: deviceLoop, controlLoop: controlLoop)
        } catch {
            deviceLoop.shutdown()
            controlLoop.shutdown()
            throw error
        }
    }

    private static func build(config: VmConfig, vm: Vm, boot: BootSetup, serialOutput: (any SerialOutput)?,
                              stopLatch: StopLatch, deviceLoop: EventLoop, controlLoop: EventLoop) throws -> Machine {
        let kvm = vm.kvm

        var pio = Bus(), mmio = Bus()
        var serial: Uart8250?
        if let serialOutput {
            let uart = Uart8250(loop: deviceLoop, interrupt: try IrqFdLine(vm: vm, gsi: 4), output: serialOutput)
            pio = try pio.inserting(name: "serial (8250)", base: 0x3F8, size: 8, .device(uart))
            serial = uart
        }
        pio = try pio.inserting(name: "i8042", base: I8042.port, size: I8042.size,
                                .device(I8042(loop: deviceLoop, power: stopLatch)))
        pio = try pio.inserting(name: "debug port", base: DebugPort.port, size: DebugPort.size,
                                .device(DebugPort(loop: deviceLoop)))
        pio = try pio.inserting(name: "acpi power", base: AcpiPowerDevice.port, size: AcpiPowerDevice.size,
                                .device(AcpiPowerDevice(loop: deviceLoop, power: stopLatch)))
        if config.testDevice {
            let testDevice = TestDevice(loop: deviceLoop)
            pio = try pio.inserting(name: "test device", base: TestDevice.port, size: TestDevice.portSize, .device(testDevice))
            mmio = try mmio.inserting(name: "test device", base: Layout.testDeviceMmio, size: TestDevice.mmioSize, .device(testDevice))
        }

        let supportedCPUID = try kvm.supportedCPUID()
        var vcpus: [Vcpu] = []
        for id in 0..<config.bootVcpus {
            let vcpu = try vm.createVcpu(id: id)
            try vcpu.setCPUID(supportedCPUID)
            if id == 0 { try vcpu.setBootState(boot.bootState) }
            vcpus.append(vcpu)
        }
        let buses = IoBuses(pio: pio, mmio: mmio)
        let manager = VcpuManager(loop: controlLoop, vcpus: vcpus, buses: buses,
                                  stopLatch: stopLatch, strategy: config.handoff)
        return Machine(vm: vm, manager: manager, deviceLoop: deviceLoop, controlLoop: controlLoop,
                       stopLatch: stopLatch, serial: serial, buses: buses)
    }

    /// Starts the vCPUs and, for `--serial tty`, terminal input (returned, for ``teardown(stdin:)``).
    func start(serialInput: Bool) async throws -> StdinPump? {
        var stdin: StdinPump?
        if serialInput, let serial {
            Terminal.enterRawMode()
            do {
                stdin = try StdinPump(fd: 0, loop: deviceLoop, uart: serial)
            } catch let error as Errno where error.rawValue == EPERM {
                Log.info("serial input disabled: stdin cannot be polled (a regular file or /dev/null)")
            }
        }
        do {
            try await manager.start()
        } catch {
            stdin?.stop()
            throw error
        }
        Log.info("started \(manager.exitCounts().count) vCPU(s)")
        return stdin
    }

    /// Stops and joins the vCPUs, then tears down terminal input, the loops and the terminal, in order.
    func teardown(stdin: StdinPump?) async {
        await manager.stop()
        stdin?.stop()
        deviceLoop.shutdown()
        controlLoop.shutdown()
        Terminal.restore()
    }
}

/// Feeds terminal input to the UART on the device loop. When the UART's receive buffer is full it stops
/// watching stdin and looks again a little later, so input waits in the terminal instead of being dropped.
final class StdinPump: Sendable {
    let fd: Int32
    let loop: EventLoop
    let uart: Uart8250
    let state = Mutex<(registration: Registration?, stopped: Bool)>((registration: nil, stopped: false))

    init(fd: Int32, loop: EventLoop, uart: Uart8250) throws {
        self.fd = fd
        self.loop = loop
        self.uart = uart
        try watch()
    }

    private func watch() throws(Errno) {
        let registration = try loop.register(fd: fd) { [self] _ in readable() }
        state.withLock { $0.registration = registration }
    }

    /// Runs on the device loop, which is the UART's executor.
    private func readable() {
        let space = uart.assumeIsolated { $0.inputSpace }
        guard space > 0 else {
            pause()
            loop.schedule(after: .milliseconds(5)) { [self] in
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
        uart.assumeIsolated { $0.enqueueInput(buffer[0..<n]) }
    }

    private func pause() {
        if let registration = state.withLock({ state -> Registration? in
            defer { state.registration = nil }
            return state.registration
        }) {
            loop.deregister(registration)
        }
    }

    func stop() {
        state.withLock { $0.stopped = true }
        pause()
    }
}
