import ActorVmm
import EpollLoop

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
