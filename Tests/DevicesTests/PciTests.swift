import ActorVmm
@testable import Devices
import EpollLoop
import Testing

@Suite struct PciTests {
    @Test func mechanism1RoutesToTheAddressedFunction() async throws {
        let loop = try EventLoop(name: "t-cf8")
        defer { loop.shutdown() }
        let bridge = PciHostBridge(loop: loop)
        var functions = [BusTarget?](repeating: nil, count: 32)
        functions[0] = .device(PciConfigWindow(device: bridge))
        let ports = PciConfigPorts(functions: functions)
        let handoff = ExitHandoff()
        func configRead(device: UInt32, register: UInt32, width: Int = 4, byte: UInt64 = 0) -> UInt64 {
            handoff.write(.router(ports), offset: 0, width: 4, value: UInt64(0x8000_0000 | device << 11 | register))
            return handoff.read(.router(ports), offset: 4 + byte, width: width)
        }
        #expect(configRead(device: 0, register: 0) == 0x0D57_8086)
        #expect(configRead(device: 0, register: 0x08) >> 8 == 0x06_0000)  // class: host bridge
        #expect(configRead(device: 0, register: 0, width: 2, byte: 2) == 0x0D57)
        #expect(configRead(device: 1, register: 0) == 0xFFFF_FFFF)  // empty slot
        // CONFIG_ADDRESS reads back (low two bits forced to zero); without the enable bit, nothing answers.
        handoff.write(.router(ports), offset: 0, width: 4, value: 0x8000_0007)
        #expect(handoff.read(.router(ports), offset: 0, width: 4) == 0x8000_0004)
        handoff.write(.router(ports), offset: 0, width: 4, value: 0)
        #expect(handoff.read(.router(ports), offset: 4, width: 4) == 0xFFFF_FFFF)
        // Byte writes to 0xCFB (a legacy probe) do not change CONFIG_ADDRESS.
        handoff.write(.router(ports), offset: 3, width: 1, value: 1)
        #expect(handoff.read(.router(ports), offset: 0, width: 4) == 0)
    }

    /// A hotplug remakes the ports with the new slot table; the guest's latched CONFIG_ADDRESS must survive
    /// it (docs/hotplug.md), or a CONFIG_DATA access right after a swap reads the wrong function.
    @Test func configAddressSurvivesRemakingThePorts() async throws {
        let loop = try EventLoop(name: "t-cf8-latch")
        defer { loop.shutdown() }
        var functions = [BusTarget?](repeating: nil, count: 32)
        functions[0] = .device(PciConfigWindow(device: PciHostBridge(loop: loop)))
        let latch = PciConfigAddress()
        let before = PciConfigPorts(functions: functions, latch: latch)
        let handoff = ExitHandoff()
        handoff.write(.router(before), offset: 0, width: 4, value: 0x8000_0000)  // bus 0, device 0, register 0
        functions[1] = .device(PciConfigWindow(device: PciHostBridge(loop: loop)))  // a slot appears
        let after = PciConfigPorts(functions: functions, latch: latch)
        #expect(handoff.read(.router(after), offset: 0, width: 4) == 0x8000_0000)
        #expect(handoff.read(.router(after), offset: 4, width: 4) == 0x0D57_8086)
        #expect(latch.current == 0x8000_0000)
    }

    @Test func capabilityListAndWriteMasks() {
        var space = PciConfigSpace(.init(vendor: 1, device: 2, classCode: 3, subclass: 4))
        let first = space.addCapability(id: 0x11, body: [1, 2, 3], writable: [1: 0xC0])
        let second = space.addCapability(id: 0x09, body: [9])
        #expect(first == 0x40 && second == 0x48)
        #expect(space.read(offset: 0x34, width: 1) == 0x40 && space.read(offset: 0x41, width: 1) == 0x48)
        space.write(offset: 0x42, width: 4, value: 0xFFFF_FFFF)
        #expect(space.read(offset: 0x42, width: 3) == 0x03_C2_01)  // only bits 7:6 of byte 1 are writable
        #expect(space.read(offset: 0x200, width: 4) == 0)         // extended space reads zero
    }
}
