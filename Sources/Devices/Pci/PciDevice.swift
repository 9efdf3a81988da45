import ActorVmm
import EpollLoop

/// A PCI function: an actor whose BAR accesses arrive through ``BusDevice`` and whose configuration
/// space is read and written through these two methods (by MMCONFIG or the 0xCF8/0xCFC mechanism).
public protocol PciDevice: BusDevice {
    func configRead(offset: UInt64, width: Int) -> UInt64
    func configWrite(offset: UInt64, width: Int, value: UInt64)
}
