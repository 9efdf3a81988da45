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

    nonisolated(nonsending) func pause() async { await machine.manager.pause() }

    nonisolated(nonsending) func resume() async { await machine.manager.resume() }

    nonisolated(nonsending) func powerButton() async {
        guard state.withLock({ !$0.down }) else { return }
        await machine.hotplug.pressPowerButton()
    }

    nonisolated(nonsending) func resize(_ request: ResizeRequest) async throws(ApiError) {
        guard state.withLock({ !$0.down }) else { throw ApiError(.methodNotAllowed, VmAction.resize.failure, "the VM is stopping") }
        if let ram = request.ram, ram != machine.vm.memory.totalSize {
            // Checked first, so a refused RAM change leaves the vCPUs alone too.
            throw ApiError(.badRequest, VmAction.resize.failure,
                           "desired_ram \(ram): memory hotplug is off (no memory.hotplug_size)")
        }
        if let vcpus = request.vcpus {
            do {
                try await machine.vcpuHotplug.resize(to: vcpus)
            } catch {
                switch error {
                case .outOfRange: throw ApiError(.badRequest, VmAction.resize.failure, error.description)
                case .removalPending: throw ApiError(.tooManyRequests, VmAction.resize.failure, error.description)
                case .failed: break
                }
                throw ApiError(.internalServerError, VmAction.resize.failure, error.description)
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
    nonisolated(nonsending) func counters() async -> JsonValue {
        var devices: [(id: String, counters: [String: UInt64])] = []
        func add(_ id: String, _ values: [String: UInt64]) {
            if let index = devices.firstIndex(where: { $0.id == id }) {
                devices[index].counters.merge(values, uniquingKeysWith: +)
            } else {
                devices.append((id, values))
            }
        }
        for entry in machine.buses.pio.entries + machine.buses.mmio.entries {
            let counters = entry.counters
            add(Self.deviceID(entry.name), [
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
        for device in machine.virtio where state.withLock({ !$0.down }) {
            let c = await device.counters
            add(device.name, ["errors": c.errors, "interrupts": c.interrupts, "virtio_requests": c.requests,
                              "notifications": c.notifications, "bytes_read": c.bytesRead, "bytes_written": c.bytesWritten,
                              "dropped": c.dropped])
        }
        let order = ["requests", "bytes", "errors", "interrupts"]
        return .object(devices.map { device in
            let names = order + device.counters.keys.filter { !order.contains($0) }.sorted()
            return JsonMember(key: device.id, value: .object(names.map { JsonMember(key: $0, value: .int(device.counters[$0] ?? 0)) }))
        })
    }

    /// Cloud Hypervisor's `DeviceNode` shape: `{"id", "resources": [{"PioAddressRange": {"base", "size"}}], "children"}`.
    func deviceTree() -> JsonValue {
        var nodes: [(id: String, resources: [JsonValue])] = []
        let ranges = machine.buses.pio.entries.map { ($0, "PioAddressRange") } + machine.buses.mmio.entries.map { ($0, "MmioAddressRange") }
        for (entry, kind) in ranges {
            let id = Self.deviceID(entry.name)
            let resource = JsonValue.object([JsonMember(key: kind, value: .object(["base": .int(entry.base), "size": .int(entry.size)]))])
            if let index = nodes.firstIndex(where: { $0.id == id }) {
                nodes[index].resources.append(resource)
            } else {
                nodes.append((id, [resource]))
            }
        }
        return .object(nodes.map { node in
            JsonMember(key: node.id, value: .object(["id": .string(node.id), "resources": .array(node.resources), "children": .array([])]))
        })
    }

    /// A device's id from its bus name: lower case, the parenthesised detail dropped, spaces as dashes
    /// ("serial (8250)" → "serial", "test device" → "test-device"). Ranges with the same id are one device:
    /// the PCI config ports and every function's MMCONFIG window are "pci"; a virtio device's BAR is the
    /// device itself ("disk0 BAR0" → "disk0").
    static func deviceID(_ busName: String) -> String {
        if busName.hasPrefix("mmconfig ") || busName == "pci config ports" { return "pci" }
        if busName.hasSuffix(" BAR0") { return String(busName.dropLast(5)) }
        let base = busName.split(separator: "(", maxSplits: 1, omittingEmptySubsequences: false)[0]
        return Substring(base.lowercased()).trimmingSpaces().split(separator: " ").joined(separator: "-")
    }
}
