@testable import ActorVmm
import Boot
@testable import Cli
import Devices
import EpollLoop
import Synchronization
import Testing

/// Allocators and the tree without KVM.
struct DeviceTreeTests {
    @Test func barsAreNaturallyAlignedAndReused() {
        var bars = BarAllocator(window: 0xC000_0000..<0xC002_0000)
        let a = bars.allocate(size: 0x8000), b = bars.allocate(size: 0x8000)
        #expect(a == 0xC000_0000..<0xC000_8000 && b == 0xC000_8000..<0xC001_0000)
        let big = bars.allocate(size: 0x10000)
        #expect(big == 0xC001_0000..<0xC002_0000)
        #expect(bars.allocate(size: 0x8000) == nil, "the window is full")
        bars.free(a!)
        #expect(bars.allocate(size: 0x8000) == a, "a freed range is reused")
    }

    @Test func removingANodeRemovesItsChildrenAndItsParentsLink() {
        var tree = DeviceTree()
        tree.insert(DeviceNode(id: "_disk0"))
        tree.insert(DeviceNode(id: "_virtio-pci-_disk0", parent: "_disk0", pciBdf: PciBdf(device: 1)))
        #expect(tree["_disk0"]?.children == ["_virtio-pci-_disk0"])
        #expect(tree["_virtio-pci-_disk0"]?.pciBdf?.description == "0000:00:01.0")
        #expect(tree.remove("_disk0") == ["_disk0", "_virtio-pci-_disk0"])
        #expect(tree.nodes.isEmpty)
    }
}

/// The device manager on /dev/kvm (no vCPU runs): what an attach sets up, a detach takes down exactly.
@Suite(.enabled(if: Kvm.isAvailable, "needs /dev/kvm; skipped on this machine"))
struct DeviceManagerTests {
    @Test func detachUndoesExactlyWhatAttachDid() async throws {
        let memory = try GuestMemory(layout: Layout.ramRegions(size: 16 << 20))
        let vm = try Vm(kvm: try Kvm(), memory: memory)
        let loop = try EventLoop(name: "dm-test")
        defer { loop.shutdown() }
        let manager = try DeviceManager(vm: vm, memory: memory, loop: loop)
        try manager.attachPlatformDevice(id: "debug-port", pio: [(DebugPort.port, DebugPort.size)], .device(DebugPort(loop: loop)))
        let before = manager.buses, treeBefore = manager.tree, vectorsBefore = manager.msiRouter.allocatedVectorCount

        #expect(manager.nextID(prefix: "_disk") == "_disk0" && manager.nextID(prefix: "_net") == "_net1", "one counter for all")
        let device = try await manager.attachVirtio(id: "_disk2", backend: try VirtioRng(path: "/dev/urandom"), loop: loop)
        let buses = manager.buses
        #expect(buses.mmio.entries.count == before.mmio.entries.count + 2, "a configuration window and BAR0")
        #expect(buses.mmio.lookup(device.barAddress)?.entry.name == "_disk2")
        let transport = try #require(manager.tree["_virtio-pci-_disk2"])
        #expect(transport.parent == "_disk2" && transport.pciBdf == PciBdf(device: 1) && transport.loop == "dm-test")
        #expect(transport.ioeventfds.map(\.address) == transport.ioeventfds.map { _ in device.notifyAddress(queue: 0) } && !transport.ioeventfds.isEmpty)
        #expect(transport.resources.first == .pciBar(index: 0, base: PciLayout.standard.barWindow.lowerBound, size: VirtioPciDevice.barSize))
        #expect(manager.msiRouter.allocatedVectorCount == vectorsBefore + 2, "one queue and the config vector")
        await #expect(throws: DeviceManagerError.idInUse("_disk2")) {
            _ = try await manager.attachVirtio(id: "_disk2", backend: try VirtioRng(path: "/dev/urandom"), loop: loop)
        }

        try await manager.detach(id: "_disk2")
        #expect(manager.tree == treeBefore)
        #expect(manager.buses.mmio.entries.map(\.base) == before.mmio.entries.map(\.base))
        #expect(manager.buses.pio.entries.map(\.base) == before.pio.entries.map(\.base))
        #expect(manager.msiRouter.allocatedVectorCount == vectorsBefore)
        await #expect(throws: DeviceManagerError.unknownDevice("_disk2")) { try await manager.detach(id: "_disk2") }

        // The same slot, BAR and doorbell address again: KVM refuses a second ioeventfd on an address
        // (EEXIST), so this attach succeeds only if the detach unregistered the first device's.
        let again = try await manager.attachVirtio(id: "again", backend: try VirtioRng(path: "/dev/urandom"), loop: loop)
        #expect(again.barAddress == device.barAddress && manager.tree["_virtio-pci-again"]?.pciBdf == PciBdf(device: 1))
        manager.freeze()
        await #expect(throws: DeviceManagerError.busesFrozen) { try await manager.detach(id: "again") }
        await manager.stopAll()
    }
}

/// Records what the device manager hands the vCPU side.
private final class RecordingPublisher: BusPublisher {
    let events = Mutex<[String]>([])
    let last = Mutex<IoBuses?>(nil)
    func publish(_ buses: IoBuses) {
        events.withLock { $0.append("publish \(buses.mmio.entries.count)") }
        last.withLock { $0 = buses }
    }
    func waitForQuiescence() { events.withLock { $0.append("quiesce") } }
}

/// Run-time changes (PCI hotplug) on /dev/kvm, no vCPU: each change is published; a detach waits for
/// quiescence after publishing; CONFIG_ADDRESS latched before a change still selects its function after.
@Suite(.enabled(if: Kvm.isAvailable, "needs /dev/kvm; skipped on this machine"))
struct DeviceManagerPublishTests {
    @Test func changesArePublishedAndTheLatchSurvivesThem() async throws {
        let memory = try GuestMemory(layout: Layout.ramRegions(size: 16 << 20))
        let vm = try Vm(kvm: try Kvm(), memory: memory)
        let loop = try EventLoop(name: "dm-publish")
        defer { loop.shutdown() }
        let manager = try DeviceManager(vm: vm, memory: memory, loop: loop)
        manager.freeze()
        await #expect(throws: DeviceManagerError.busesFrozen) {
            _ = try await manager.attachVirtio(id: "a", backend: try VirtioRng(path: "/dev/urandom"), loop: loop)
        }
        let publisher = RecordingPublisher()
        manager.publish(to: publisher)
        let handoff = ExitHandoff()
        func configPorts() -> BusTarget { (publisher.last.withLock { $0 } ?? manager.buses).pio.lookup(0xCF8)!.entry.target }

        _ = try await manager.attachVirtio(id: "a", backend: try VirtioRng(path: "/dev/urandom"), loop: loop)
        handoff.write(configPorts(), offset: 0, width: 4, value: 0x8000_0800)  // the guest latches 00:01.0
        _ = try await manager.attachVirtio(id: "b", backend: try VirtioRng(path: "/dev/urandom"), loop: loop)
        #expect(handoff.read(configPorts(), offset: 4, width: 4) == 0x1044_1AF4, "00:01.0 (entropy) through the new ports")
        try await manager.detach(id: "a")
        #expect(handoff.read(configPorts(), offset: 4, width: 4) == 0xFFFF_FFFF, "the slot is empty now")
        let windowAndBar = 2, base = manager.buses.mmio.entries.count - windowAndBar
        #expect(publisher.events.withLock { $0 } == ["publish \(base + 2)", "publish \(base + 4)", "publish \(base + 2)", "quiesce"])
        await manager.stopAll()
    }
}

/// `vm.info`'s `device_tree` in Cloud Hypervisor's `DeviceNode` shape.
struct DeviceTreeJsonTests {
    @Test func nodesAsCloudHypervisorWritesThem() {
        var tree = DeviceTree()
        tree.insert(DeviceNode(id: "_disk0"))
        tree.insert(DeviceNode(id: "_virtio-pci-_disk0", resources: [.pciBar(index: 0, base: 0xC000_0000, size: 0x8000)],
                               parent: "_disk0", pciBdf: PciBdf(device: 1)))
        let json = tree.json
        #expect(json["_disk0"]?["children"] == .array([.string("_virtio-pci-_disk0")]))
        #expect(json["_disk0"]?["parent"] == .null && json["_disk0"]?["pci_bdf"] == .null)
        #expect(json["_virtio-pci-_disk0"]?["pci_bdf"] == .string("0000:00:01.0"))
        #expect(json["_virtio-pci-_disk0"]?["parent"] == .string("_disk0"))
        guard case .array(let resources)? = json["_virtio-pci-_disk0"]?["resources"] else { Issue.record("no resources"); return }
        #expect(resources.first?["PciBar"]?["base"] == .int(0xC000_0000))
    }
}

/// Generated ids skip the ids the config gives to devices attached later.
@Suite(.enabled(if: Kvm.isAvailable, "needs /dev/kvm; skipped on this machine"))
struct DeviceIdTests {
    @Test func generatedIDsAvoidGivenOnes() throws {
        let memory = try GuestMemory(layout: Layout.ramRegions(size: 16 << 20))
        let loop = try EventLoop(name: "dm-ids")
        defer { loop.shutdown() }
        let manager = try DeviceManager(vm: try Vm(kvm: try Kvm(), memory: memory), memory: memory, loop: loop)
        #expect(manager.nextID(prefix: "_disk", avoiding: ["_disk0"]) == "_disk1")
        #expect(manager.nextID(prefix: "_net") == "_net2")
    }
}
