// A VM built in-process with the library, for one measurement: the devices under test are attached by
// the caller through the control plane's device manager (as actor-vmm attaches its own); the benchmark adds
// a UART (capturing the guest's output) and the ACPI power register on a loop of their own, so the device
// under test has its loop to itself.
import ActorVmm
import Boot
import CKvm
import Cli
import Devices
import EpollLoop
import Glibc
import Synchronization

/// Serial output kept in memory, to check the guest's result lines.
final class CapturedOutput: SerialOutput {
    private let bytes = Mutex<[UInt8]>([])

    func write(_ buffer: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: buffer) } }

    var text: String { bytes.withLock { String(decoding: $0, as: UTF8.self) } }
}

/// Why a benchmark run could not produce numbers (one line, shown in the table instead of a result).
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One VM: KVM VM, vCPUs, buses, a control loop for the vCPU manager and a loop for the legacy devices.
final class BenchVm {
    let vm: Vm
    let manager: VcpuManager
    /// The VM's devices (the caller's and the two above) and buses.
    let devicesManager: DeviceManager
    let stopLatch = StopLatch()
    let serial = CapturedOutput()
    let systemLoop: EventLoop
    let controlLoop: EventLoop
    /// vCPU 0's TSC offset (guest TSC − host TSC) before it first ran, if KVM tells.
    let tscOffset: Int64?

    /// Builds the VM on `memory` (already loaded). vCPU `i` starts at `bootStates[i]`; vCPUs after the
    /// first are made runnable directly (no INIT/SIPI). `devices` attaches the devices under test to the
    /// VM's device manager (PCI root in place); the UART (0x3F8) and ACPI power (0x600) are added here.
    init(memory: GuestMemory, bootStates: [VcpuBootState], strategy: HandoffStrategy,
         threadOptions: [VcpuThreadOptions], devices: (DeviceManager) async throws -> Void) async throws {
        let kvm = try Kvm()
        vm = try Vm(kvm: kvm, memory: memory, options: VmOptions(pit: true))
        systemLoop = try EventLoop(name: "bench-system")
        controlLoop = try EventLoop(name: "bench-control")
        let deviceManager = try DeviceManager(vm: vm, memory: memory, loop: systemLoop)
        try await devices(deviceManager)
        let uart = Uart8250(loop: systemLoop, interrupt: try IrqFdLine(vm: vm, gsi: 4), output: serial)
        try deviceManager.attachPlatformDevice(id: "serial", pio: [(Uart8250.port, Uart8250.size)], .device(uart))
        try deviceManager.attachPlatformDevice(id: "acpi-power", pio: [(AcpiPowerDevice.port, AcpiPowerDevice.size)],
                                               .device(AcpiPowerDevice(loop: systemLoop, power: stopLatch)))
        devicesManager = deviceManager
        let cpuid = try kvm.supportedCPUID()
        var vcpus: [Vcpu] = []
        for (id, state) in bootStates.enumerated() {
            let vcpu = try vm.createVcpu(id: id)
            try vcpu.setCPUID(cpuid)
            try vcpu.setBootState(state)
            if id > 0 { try vcpu.setRunnable() }
            vcpus.append(vcpu)
        }
        tscOffset = vcpus.first?.tscOffset()
        let buses = deviceManager.buses
        deviceManager.freeze()
        manager = VcpuManager(loop: controlLoop, vcpus: vcpus, buses: buses,
                              stopLatch: stopLatch, strategy: strategy, threadOptions: threadOptions)
    }

    func start() async throws {
        try await manager.start()
    }

    /// Blocks until the guest stops the VM (power-off, fault), or until `timeout` seconds have passed.
    func waitForStop(timeout: Double) -> VmStopReason {
        let latch = stopLatch
        let timer = controlLoop.schedule(after: .milliseconds(Int(timeout * 1000))) {
            latch.requestStop(.stopRequested("benchmark timeout after \(Int(timeout)) s"))
        }
        let reason = stopLatch.wait()
        _ = controlLoop.cancel(timer)
        return reason
    }

    /// Stops and joins the vCPUs, then shuts the VM's own loops down (the caller owns the devices' loops).
    func tearDown() async {
        stopLatch.requestStop(.stopRequested("benchmark done"))
        await manager.stop()
        systemLoop.shutdown()
        controlLoop.shutdown()
    }
}

/// Event loops for devices under test, optionally pinned to one CPU each.
enum Loops {
    /// Starts a loop named `name`, pinned to `cpu` if given (the pinning runs on the loop thread itself).
    static func make(_ name: String, cpu: Int?) throws -> EventLoop {
        let loop = try EventLoop(name: name)
        if let cpu {
            let done = ThreadParker()
            let failure = Mutex<Errno?>(nil)
            loop.execute {
                do throws(Errno) { try pinCurrentThread(to: cpu) } catch { failure.withLock { $0 = error } }
                done.signal()
            }
            done.wait()
            if let error = failure.withLock({ $0 }) {
                loop.shutdown()
                throw BenchError("cannot pin loop \(name) to CPU \(cpu): \(error)")
            }
        }
        return loop
    }
}

/// Guest RAM for a benchmark VM: `mebibytes` at guest-physical 0.
func benchMemory(mebibytes: Int) throws -> GuestMemory {
    try GuestMemory(layout: Layout.ramRegions(size: UInt64(mebibytes) << 20))
}
