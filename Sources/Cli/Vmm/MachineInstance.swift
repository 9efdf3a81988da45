import ActorVmm
import Devices
import Synchronization

/// A booted ``Machine`` as the lifecycle sees it: pause, resume, shut down, and what it has done.
final class MachineInstance: VmInstance {
    let machine: Machine
    /// Terminal input while the VM runs, and whether the machine has been torn down.
    private let state: Mutex<(stdin: StdinPump?, down: Bool)>

    init(machine: Machine, stdin: StdinPump?) {
        self.machine = machine
        state = Mutex((stdin: stdin, down: false))
    }

    /// Parks the vCPUs and quiesces every device (docs/snapshot.md): a consistent cut.
    nonisolated(nonsending) func pause() async { await machine.snapshotter.pause() }

    nonisolated(nonsending) func resume() async { await machine.snapshotter.resume() }

    /// True once the machine is being torn down.
    var isDown: Bool { state.withLock { $0.down } }

    nonisolated(nonsending) func powerButton() async {
        guard state.withLock({ !$0.down }) else { return }
        await machine.hotplug.pressPowerButton()
    }

    nonisolated(nonsending) func resize(_ request: ResizeRequest) async throws(VmmError) {
        guard state.withLock({ !$0.down }) else { throw VmmError(.invalidTransition, VmAction.resize.failure, "the VM is stopping") }
        if let ram = request.ram, let virtioMem = machine.virtioMem {
            do {
                try await virtioMem.resize(to: ram)
            } catch {
                throw VmmError(error.refused ? .badRequest : .hostFault, VmAction.resize.failure, error.message)
            }
        } else if let ram = request.ram, ram != machine.vm.memory.totalSize {
            // RAM first: a refused RAM change leaves the vCPUs alone too.
            guard let memoryHotplug = machine.memoryHotplug else {
                throw VmmError(.badRequest, VmAction.resize.failure, "desired_ram \(ram): memory hotplug is off (no memory.hotplug_size)")
            }
            do {
                try await memoryHotplug.resize(to: ram)
            } catch {
                throw VmmError(error.refused ? .badRequest : .hostFault, VmAction.resize.failure, error.message)
            }
        }
        if let vcpus = request.vcpus {
            do {
                try await machine.vcpuHotplug.resize(to: vcpus)
            } catch {
                switch error {
                case .outOfRange: throw VmmError(.badRequest, VmAction.resize.failure, error.description)
                case .removalPending: throw VmmError(.busy, VmAction.resize.failure, error.description)
                case .failed: break
                }
                throw VmmError(.hostFault, VmAction.resize.failure, error.description)
            }
        }
    }

    nonisolated(nonsending) func shutdown() async {
        let stdin = state.withLock { state -> StdinPump?? in
            guard !state.down else { return nil }
            state.down = true
            defer { state.stdin = nil }
            return .some(state.stdin)
        }
        guard let stdin else { return }
        await machine.teardown(stdin: stdin)
    }

    /// Bus accesses per device (requests, bytes), plus what the virtio devices and the serial port count
    /// themselves (the serial port: interrupts sent, bytes transmitted and received, input lost to overruns,
    /// reported as errors).
    nonisolated(nonsending) func counters() async -> [DeviceCounterSet] {
        var devices: [(id: String, counters: [String: UInt64])] = []
        func add(_ id: String, _ values: [String: UInt64]) {
            if let index = devices.firstIndex(where: { $0.id == id }) {
                devices[index].counters.merge(values, uniquingKeysWith: +)
            } else {
                devices.append((id, values))
            }
        }
        let buses = machine.devices.buses
        for entry in buses.pio.entries + buses.mmio.entries {  // each range is named by its device's id
            let counters = entry.counters
            add(entry.name, [
                "requests": counters.requests.load(ordering: .relaxed), "bytes": counters.bytes.load(ordering: .relaxed),
                "errors": counters.errors.load(ordering: .relaxed), "interrupts": counters.interrupts.load(ordering: .relaxed),
            ])
        }
        if let serial = machine.serial, state.withLock({ !$0.down }) {
            let uart = await serial.counters
            add("serial", ["interrupts": uart.interrupts, "errors": uart.overruns, "tx_bytes": uart.bytesOut, "rx_bytes": uart.bytesIn])
        }
        // A virtio device's own counts (its BAR accesses are above): virtqueue requests, bytes it read from and
        // wrote into the guest, notifications, frames or input dropped; its errors and MSI-X interrupts add in.
        // With per-queue placement, its queue workers' counts too.
        for (id, device) in machine.devices.virtioDevices where state.withLock({ !$0.down }) {
            let c = await device.totalCounters()
            add(id, ["errors": c.errors, "interrupts": c.interrupts, "virtio_requests": c.requests,
                              "notifications": c.notifications, "bytes_read": c.bytesRead, "bytes_written": c.bytesWritten,
                              "dropped": c.dropped])
        }
        if let virtioMem = machine.virtioMem {
            add(VirtioMemHotplug.id, ["plugged_size": virtioMem.status.plugged.load(ordering: .relaxed),
                                      "requested_size": virtioMem.status.requested.load(ordering: .relaxed)])
        }
        let order = ["requests", "bytes", "errors", "interrupts"]
        return devices.map { device in
            let names = order + device.counters.keys.filter { !order.contains($0) }.sorted()
            return DeviceCounterSet(id: device.id, counters: names.map { ($0, device.counters[$0] ?? 0) })
        }
    }

    func deviceTree() -> DeviceTree { machine.devices.tree }

    var virtioMemPluggedSize: UInt64? { machine.virtioMem?.status.plugged.load(ordering: .relaxed) }
}
