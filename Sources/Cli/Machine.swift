import ActorVmm
import Boot
import CKvm
import Devices
import EpollLoop
import Glibc

/// A running VM and everything that must be torn down with it, in order.
struct Machine {
    let vm: Vm
    let manager: VcpuManager
    let deviceLoop: EventLoop
    let controlLoop: EventLoop
    let stopLatch: StopLatch
    let serial: Uart8250?
    /// Every device, its addresses and the buses (each change is published to the vCPUs).
    let devices: DeviceManager
    /// The GED (power button) and the hotplug register blocks.
    let hotplug: AcpiHotplugDevices
    /// vm.resize's vCPU part.
    let vcpuHotplug: VcpuHotplug
    /// vm.resize's RAM part (nil without `hotplug_size`).
    let memoryHotplug: MemoryHotplug?
    /// vm.resize's RAM part with virtio-mem (nil without it).
    let virtioMem: VirtioMemHotplug?
    /// vm.add-disk, vm.add-net and vm.remove-device.
    let pciHotplug: PciHotplug
    /// The terminal is shared with the guest (serial or console on `tty`): raw mode while it runs.
    let usesTerminal: Bool

    /// Builds the VM described by `config` from `prepared` (guest memory loaded, device backends opened);
    /// `stopLatch` hears when the guest stops it. Host failures here are VMM faults (exit code 1, API status
    /// 500); all user-input checks happened before. On failure the loops it started are shut down again.
    /// `nonisolated(nonsending)`, as are ``start(serialInput:)`` and ``teardown(stdin:)``: they run on the
    /// caller's executor (the controller's `vmm-main`), never on the requesting task's preferred executor
    /// (an API request's `vmm-api` loop, whose seccomp filter has no KVM in it) nor the global pool.
    nonisolated(nonsending) static func build(config: VmConfig, prepared: PreparedPayload, stopLatch: StopLatch) async throws -> Machine {
        let kvm = try Kvm()
        let vm = try Vm(kvm: kvm, memory: prepared.memory, options: VmOptions(pit: prepared.compat.wantsPit))
        let deviceLoop = try EventLoop(name: "vmm-devices", onStart: Seccomp.threadStart(.device))
        let controlLoop: EventLoop
        do {
            controlLoop = try EventLoop(name: "vmm-control")
        } catch {
            deviceLoop.shutdown()
            throw error
        }
        do {
            return try await build(config: config, vm: vm, prepared: prepared, stopLatch: stopLatch,
                                   deviceLoop: deviceLoop, controlLoop: controlLoop)
        } catch {
            deviceLoop.shutdown()
            controlLoop.shutdown()
            throw error
        }
    }

    nonisolated(nonsending) private static func build(config: VmConfig, vm: Vm, prepared: PreparedPayload,
                              stopLatch: StopLatch, deviceLoop: EventLoop, controlLoop: EventLoop) async throws -> Machine {
        let kvm = vm.kvm
        let boot = prepared.boot, devices = prepared.devices
        let deviceManager = try DeviceManager(vm: vm, memory: prepared.memory, loop: deviceLoop)
        var serial: Uart8250?
        if let serialOutput = devices.serialOutput {
            let uart = Uart8250(loop: deviceLoop, interrupt: try IrqFdLine(vm: vm, gsi: 4), output: serialOutput)
            try deviceManager.attachPlatformDevice(id: "serial", pio: [(Uart8250.port, Uart8250.size)], .device(uart))
            serial = uart
        }
        try deviceManager.attachPlatformDevice(id: "i8042", pio: [(I8042.port, I8042.size)], .device(I8042(loop: deviceLoop, power: stopLatch)))
        try deviceManager.attachPlatformDevice(id: "debug-port", pio: [(DebugPort.port, DebugPort.size)], .device(DebugPort(loop: deviceLoop)))
        try deviceManager.attachPlatformDevice(id: "acpi-power", pio: [(AcpiPowerDevice.port, AcpiPowerDevice.size)],
                                         .device(AcpiPowerDevice(loop: deviceLoop, power: stopLatch)))
        let hotplug = try AcpiHotplugDevices(vm: vm, loop: deviceLoop, config: AcpiHotplugDevices.acpi(hotplugSize: config.acpiHotplugSize),
                                             bootVcpus: config.bootVcpus, maxVcpus: config.maxVcpus)
        try hotplug.attach(to: deviceManager)
        if config.testDevice {
            try deviceManager.attachPlatformDevice(id: "test-device", pio: [(TestDevice.port, TestDevice.portSize)],
                                             mmio: [(Layout.testDeviceMmio, TestDevice.mmioSize)], .device(TestDevice(loop: deviceLoop)))
        }

        // Virtio devices from slot 1, in config order (docs/devices.md), on the loops `--event-loops` gives
        // them (DevicePlacement.swift). Devices and loops made here are stopped again if a later step fails.
        do {
            let givenIDs = Set(devices.virtio.compactMap(\.id))
            for prepared in devices.virtio {
                let id = prepared.id ?? deviceManager.nextID(prefix: prepared.idPrefix, avoiding: givenIDs)
                _ = try await deviceManager.attach(prepared, id: id, placement: config.placement, sharedLoop: deviceLoop)
            }
            for node in deviceManager.tree.nodes {  // boot devices: ejectable by the guest, not announced
                if let slot = node.pciBdf?.device { await hotplug.pci.slotAdded(Int(slot), announce: false) }
            }
            // After them, and not ejectable: the region stays the guest's RAM whatever the guest asks.
            let virtioMem = try await VirtioMemHotplug.attach(config: config, vm: vm, devices: deviceManager, loop: deviceLoop)

            let supportedCPUID = MemoryOptions.limitPhysicalAddressBits(prepared.compat.adjustedCPUID(try kvm.supportedCPUID()),
                                                                        to: config.maxPhysBits)
            var vcpus: [Vcpu] = []
            for id in 0..<config.bootVcpus {
                let vcpu = try vm.createVcpu(id: id)
                try vcpu.configure(supportedCPUID: supportedCPUID, maxVcpus: config.maxVcpus)
                if id == 0 { try vcpu.setBootState(boot.bootState) }
                vcpus.append(vcpu)
            }
            let buses = deviceManager.buses
            deviceManager.freeze()  // the vCPUs get this snapshot; later ones go through the VcpuManager
            // With --handoff task a vCPU thread starts Swift tasks on the global pool, whose worker threads
            // inherit the filter of the thread that happens to create them: vCPUs keep the process filter.
            let vcpuStart = config.handoff == .task ? nil : Seccomp.threadStart(.vcpu)
            let manager = VcpuManager(loop: controlLoop, vcpus: vcpus, buses: buses, stopLatch: stopLatch,
                                      strategy: config.handoff,
                                      threadOptions: vcpus.map { _ in VcpuThreadOptions(onStart: vcpuStart) },
                                      emulator: prepared.compat.emulator(for: vm))
            deviceManager.publish(to: manager)  // PCI hotplug swaps the vCPUs' buses from now on
            let vcpuHotplug = VcpuHotplug(vm: vm, manager: manager, devices: hotplug, supportedCPUID: supportedCPUID,
                                          maxVcpus: config.maxVcpus, threadOptions: VcpuThreadOptions(onStart: vcpuStart))
            return Machine(vm: vm, manager: manager, deviceLoop: deviceLoop, controlLoop: controlLoop,
                           stopLatch: stopLatch, serial: serial, devices: deviceManager,
                           hotplug: hotplug, vcpuHotplug: vcpuHotplug,
                           memoryHotplug: config.acpiHotplugSize == 0 ? nil
                               : MemoryHotplug(vm: vm, devices: hotplug, bootRam: config.memorySize, hotplugSize: config.acpiHotplugSize),
                           virtioMem: virtioMem,
                           pciHotplug: PciHotplug(devices: deviceManager, acpi: hotplug, loop: deviceLoop,
                                                  placement: config.placement, controlLoop: controlLoop),
                           usesTerminal: devices.usesTerminal)
        } catch {
            await deviceManager.stopAll()
            deviceManager.shutDownDeviceLoops()
            throw error
        }
    }

    /// Starts the vCPUs and, for `--serial tty`, terminal input (returned, for ``teardown(stdin:)``).
    nonisolated(nonsending) func start(serialInput: Bool, parked: Bool = false) async throws -> StdinPump? {
        var stdin: StdinPump?
        if usesTerminal { Terminal.enterRawMode() }
        if serialInput, let serial {
            do {
                stdin = try StdinPump(fd: 0, uart: serial)
            } catch let error as Errno where error.rawValue == EPERM {
                Log.info("serial input disabled: stdin cannot be polled (a regular file or /dev/null)")
            }
        }
        do {
            if parked { try await manager.startParked() } else { try await manager.start() }
        } catch {
            stdin?.stop()
            throw error
        }
        Log.info("started \(manager.exitCounts().count) vCPU(s)")
        return stdin
    }

    /// Stops and joins the vCPUs, then tears down terminal input, the virtio devices (logging their
    /// counters), the loops and the terminal, in order.
    nonisolated(nonsending) func teardown(stdin: StdinPump?) async {
        await hotplug.finish()  // ends the ejection streams before the vCPUs are joined
        await vcpuHotplug.ejectionWatcher.value
        await pciHotplug.ejectionWatcher.value
        await manager.stop()
        for (index, stats) in manager.kvmStats().enumerated() {
            switch stats {
            case .success(let stats): Log.info("vcpu\(index): \(stats.summary)")
            case .failure(let error): Log.debug("vcpu\(index): no KVM statistics: \(error)")
            }
        }
        if let emulator = manager.emulator {
            Log.info("compatibility mode: emulated \(emulator.counters.summary)")
        }
        stdin?.stop()
        for (_, device) in devices.virtioDevices {
            let c = await device.totalCounters()  // before the stop, which lets its queue workers go
            await device.stop()
            Log.info("\(device.name): \(c.requests) requests, \(c.bytesRead) bytes read, \(c.bytesWritten) written, \(c.errors) errors, \(c.interrupts) interrupts, \(c.dropped) dropped")
        }
        deviceLoop.shutdown()
        devices.shutDownDeviceLoops()
        controlLoop.shutdown()
        Terminal.restore()
    }
}
