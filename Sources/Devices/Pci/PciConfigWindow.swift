import ActorVmm
import EpollLoop

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
