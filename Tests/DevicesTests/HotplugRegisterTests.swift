import ActorVmm
import Devices
import EpollLoop
import Synchronization
import Testing

/// Counts interrupt edges.
private final class EdgeCounter: InterruptSink {
    private let edges = Atomic<Int>(0)
    func trigger() { edges.add(1, ordering: .relaxed) }
    var count: Int { edges.load(ordering: .relaxed) }
}

/// The first `count` values of `stream`, waiting at most a second for each.
private func first(_ count: Int, of stream: AsyncStream<Int>) async -> [Int] {
    var values: [Int] = []
    var iterator = stream.makeAsyncIterator()
    while values.count < count, let value = await iterator.next() { values.append(value) }
    return values
}

/// The GED and the PCI, CPU and memory hotplug register blocks, accessed as the DSDT's fields do
/// (offsets and widths spelled here as the AML spells them, not with the devices' constants).
@Suite struct HotplugRegisterTests {
    @Test func gedReportsEventsOnceAndRaisesItsInterrupt() async throws {
        let loop = try EventLoop(name: "ged")
        defer { loop.shutdown() }
        let irq = EdgeCounter()
        let ged = AcpiGed(loop: loop, interrupt: irq)
        #expect(await ged.read(offset: 0, width: 1) == 0)
        await ged.pressPowerButton()
        await ged.notify(.pci)
        #expect(irq.count == 2)
        #expect(await ged.read(offset: 0, width: 1) == 8 | 4, "power button and PCI bits")
        #expect(await ged.read(offset: 0, width: 1) == 0, "reading clears the bits")
        await ged.write(offset: 0, width: 1, value: 0xFF)
        #expect(await ged.read(offset: 0, width: 1) == 0, "the guest cannot set bits")
        await ged.notify([.cpu, .memory])
        #expect(await ged.read(offset: 0, width: 1) == 1 | 2)
    }

    @Test func pciSlotsComeUpGoDownAndAreEjectedOnce() async throws {
        let loop = try EventLoop(name: "pci-hotplug")
        defer { loop.shutdown() }
        let pci = PciHotplugController(loop: loop)
        await pci.slotAdded(1, announce: false)   // present at boot
        await pci.slotAdded(3)
        #expect(await pci.read(offset: 0, width: 4) == 1 << 3, "PCIU: the announced slot only")
        #expect(await pci.read(offset: 0, width: 4) == 0, "PCIU clears on read")
        await pci.removalRequested(3)
        await pci.removalRequested(5)             // empty: nothing to ask
        #expect(await pci.read(offset: 4, width: 4) == 1 << 3, "PCID")
        #expect(await pci.read(offset: 4, width: 4) == 0)
        #expect(await pci.read(offset: 8, width: 4) == 0, "B0EJ reads 0")
        await pci.write(offset: 8, width: 2, value: 1 << 3)   // wrong width: ignored
        // The guest's _EJ0 (PCEJ): PSEG = 0, B0EJ = 1 << slot. Slot 0 and empty slot 7 are refused.
        await pci.write(offset: 12, width: 4, value: 0)
        await pci.write(offset: 8, width: 4, value: 1 << 3 | 1 << 0 | 1 << 7)
        await pci.write(offset: 8, width: 4, value: 1 << 1)   // a boot device the guest's user ejects
        await pci.write(offset: 8, width: 4, value: 1 << 3)   // twice: already gone
        #expect(await pci.refusedEjections == 3)
        #expect(await pci.occupied.isEmpty)
        await pci.finish()
        #expect(await first(3, of: pci.ejections) == [3, 1])
    }

    @Test func cpuInsertionRemovalAndEjectFollowTheScan() async throws {
        let loop = try EventLoop(name: "cpu-hotplug")
        defer { loop.shutdown() }
        let cpus = CpuHotplugController(loop: loop, bootVcpus: 2, maxVcpus: 4)
        func status(_ id: UInt64) async -> UInt64 {
            await cpus.write(offset: 0, width: 4, value: id)
            return await cpus.read(offset: 4, width: 1)
        }
        var boot: [UInt64] = []
        for id in UInt64(0)..<4 { boot.append(await status(id)) }
        #expect(boot == [1, 1, 0, 0])
        #expect(await cpus.read(offset: 0, width: 4) == 3, "CSEL reads back")
        await cpus.insert(2)
        #expect(await status(2) == 1 | 2, "enabled, inserting")
        await cpus.write(offset: 4, width: 1, value: 2)     // CINS = One: acknowledged
        #expect(await status(2) == 1)
        // The guest cannot eject what the host did not ask for, nor vCPU 0.
        await cpus.write(offset: 4, width: 1, value: 8)
        _ = await status(0)
        await cpus.write(offset: 4, width: 1, value: 8)
        #expect(await cpus.enabledVcpus == [0, 1, 2])
        await cpus.requestRemoval(2)
        #expect(await status(2) == 1 | 4, "enabled, removing")
        await cpus.write(offset: 4, width: 1, value: 4)     // CRMV = One, as CSCN does before the eject
        #expect(await status(2) == 1)
        await cpus.write(offset: 4, width: 1, value: 8)     // CEJ0 = One
        #expect(await status(2) == 0)
        #expect(await cpus.enabledVcpus == [0, 1])
        await cpus.write(offset: 0, width: 4, value: 0xFFFF_FFFF)   // hostile selector
        #expect(await cpus.read(offset: 4, width: 1) == 0)
        await cpus.write(offset: 4, width: 1, value: 0xFF)
        await cpus.finish()
        #expect(await first(2, of: cpus.ejections) == [2])
    }

    @Test func memorySlotsDescribeTheirRangeAndTakeOst() async throws {
        let loop = try EventLoop(name: "memory-hotplug")
        defer { loop.shutdown() }
        let memory = MemoryHotplugController(loop: loop, slots: 2)
        #expect(await memory.plug(base: 0x1_2000_0000, length: 0x8000_0000) == 0)
        #expect(await memory.plug(base: 0x2_0000_0000, length: 0x1_0000_0000) == 1)
        #expect(await memory.plug(base: 0x3_0000_0000, length: 0x800_0000) == nil, "both slots in use")
        await memory.write(offset: 0, width: 4, value: 1)   // MSEL
        #expect(await memory.read(offset: 0, width: 4) == 0)
        #expect(await memory.read(offset: 4, width: 4) == 2)
        #expect(await memory.read(offset: 8, width: 4) == 0)
        #expect(await memory.read(offset: 0xC, width: 4) == 1)
        #expect(await memory.read(offset: 0x14, width: 1) == 1 | 2, "enabled, inserting")
        await memory.write(offset: 0x14, width: 1, value: 2)   // MINS = One
        #expect(await memory.read(offset: 0x14, width: 1) == 1)
        await memory.write(offset: 0x14, width: 1, value: 8)   // eject: refused, still enabled
        #expect(await memory.read(offset: 0x14, width: 1) == 1)
        await memory.write(offset: 4, width: 4, value: 1)      // MOEV: device check
        await memory.write(offset: 8, width: 4, value: 0)      // MOSC: success
        #expect(await memory.lastOst(1)! == (1, 0))
        #expect(await memory.lastOst(0) == nil)
        await memory.write(offset: 0, width: 4, value: 9)      // out of range: reads 0, writes ignored
        #expect(await memory.read(offset: 0xC, width: 4) == 0)
        await memory.write(offset: 8, width: 4, value: 5)
    }
}
