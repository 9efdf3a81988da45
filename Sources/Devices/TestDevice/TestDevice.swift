import ActorVmm
import EpollLoop
import Synchronization

/// The ActorVMM test device: a tiny register block the test guest and the benchmarks use to measure and
/// verify exit round trips, at I/O ports 0x0A00–0x0A0F and at MMIO 0xFEA00000 (one page).
///
/// | offset | write                         | read (width w)                              |
/// |--------|-------------------------------|---------------------------------------------|
/// | 0x0    | stores V (zero-extended)      | low w bytes of ~V (32-bit NOT)              |
/// | 0x4    | ignored                       | number of writes to 0x0 (32-bit, wrapping)  |
/// | 0x8    | ignored (a doorbell)          | 0x41564D54, "TMVA" as little-endian ASCII   |
/// | other  | ignored                       | 0                                            |
///
/// The guest checks every reply, so a hand-off that loses or reorders accesses fails the test.
public actor TestDevice: BusDevice {
    public static let port: UInt64 = 0x0A00
    public static let portSize: UInt64 = 0x10
    public static let mmioSize: UInt64 = 0x1000
    public static let magic: UInt64 = 0x4156_4D54

    public nonisolated let loop: EventLoop
    var value: UInt32 = 0
    public private(set) var writeCount: UInt32 = 0

    public init(loop: EventLoop) { self.loop = loop }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        TestDeviceRegisters.read(offset: offset, width: width, value: value, writeCount: writeCount)
    }

    public func write(offset: UInt64, width: Int, value newValue: UInt64) {
        if offset == 0 {
            value = UInt32(truncatingIfNeeded: newValue)
            writeCount &+= 1
        }
    }
}

/// The same registers with no actor, handled directly on the vCPU thread: the benchmarks' floor.
/// State is two atomics, so it is safe from several vCPU threads without an executor.
public final class RawTestDevice: RawBusDevice {
    let value = Atomic<UInt32>(0)
    let writeCount = Atomic<UInt32>(0)

    public init() {}

    public func read(offset: UInt64, width: Int) -> UInt64 {
        TestDeviceRegisters.read(offset: offset, width: width, value: value.load(ordering: .relaxed),
                                 writeCount: writeCount.load(ordering: .relaxed))
    }

    public func write(offset: UInt64, width: Int, value newValue: UInt64) {
        if offset == 0 {
            value.store(UInt32(truncatingIfNeeded: newValue), ordering: .relaxed)
            writeCount.wrappingAdd(1, ordering: .relaxed)
        }
    }
}

/// The register semantics shared by both variants.
enum TestDeviceRegisters {
    static func read(offset: UInt64, width: Int, value: UInt32, writeCount: UInt32) -> UInt64 {
        let full: UInt64
        switch offset {
        case 0: full = UInt64(~value)
        case 4: full = UInt64(writeCount)
        case 8: full = TestDevice.magic
        default: full = 0
        }
        return width >= 8 ? full : full & ((1 << (UInt64(width) * 8)) - 1)
    }
}
