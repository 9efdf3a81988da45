import ActorVmm
import EpollLoop

/// A PCI function: an actor whose BAR accesses arrive through ``BusDevice`` and whose configuration
/// space is read and written through these two methods (by MMCONFIG or the 0xCF8/0xCFC mechanism).
public protocol PciDevice: BusDevice {
    func configRead(offset: UInt64, width: Int) -> UInt64
    func configWrite(offset: UInt64, width: Int, value: UInt64)
}

/// A PCI function's configuration space as a bus device (one 4 KiB MMCONFIG window).
///
/// It is a separate actor from the device because one actor has one `read`/`write` pair, but it shares the
/// device's executor: both actors are isolated to the same event loop, so this one may enter the device
/// synchronously with `assumeIsolated` — the handler runs on whichever thread owns that loop.
public actor PciConfigWindow: BusDevice {
    public nonisolated let loop: EventLoop
    let device: any PciDevice

    public init(device: any PciDevice) {
        self.device = device
        self.loop = device.loop
    }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        device.assumeIsolated { $0.configRead(offset: offset, width: width) }
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        device.assumeIsolated { $0.configWrite(offset: offset, width: width, value: value) }
    }
}

/// The host bridge at 00:00.0 (vendor 0x8086, device 0x0D57, class 06:00:00), which only has a header.
public actor PciHostBridge: PciDevice {
    public nonisolated let loop: EventLoop
    var config = PciConfigSpace(.init(vendor: 0x8086, device: 0x0D57, classCode: 0x06, subclass: 0x00))

    public init(loop: EventLoop) { self.loop = loop }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, width: Int, value: UInt64) {}
    public func configRead(offset: UInt64, width: Int) -> UInt64 { config.read(offset: Int(offset), width: width) }
    public func configWrite(offset: UInt64, width: Int, value: UInt64) {
        config.write(offset: Int(offset), width: width, value: value)
    }
}
