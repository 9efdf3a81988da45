import ActorVmm
import EpollLoop

/// The PCI hotplug register block (Cloud Hypervisor's `PCIU`/`PCID`/`B0EJ`/`PSEG`, four little-endian
/// 32-bit registers) behind the DSDT's `\_SB.PHPR` and `\_SB.PCI0.PCNT` (Boot's `PciHotplugAml`):
///
/// | offset | register | read | write |
/// | --- | --- | --- | --- |
/// | 0 | PCIU | slots that came up since the last read (then cleared) | ignored |
/// | 4 | PCID | slots the host wants removed since the last read (then cleared) | ignored |
/// | 8 | B0EJ | 0 | the guest ejects the slots whose bits are set |
/// | 12 | PSEG | the selected segment (0) | selects a segment; only 0 exists |
///
/// The device manager calls ``slotAdded(_:)`` / ``removalRequested(_:)`` and then raises the GED's PCI
/// event; the guest's ejections arrive on ``ejections``, for the device manager to tear the device down.
/// Only 4-byte accesses are accepted (the DSDT's fields are DWordAcc); anything else from the guest is
/// ignored.
public actor PciHotplugController: BusDevice {
    public static let size: UInt64 = 16
    /// Hot-pluggable slots of bus 0 (slot 0 is the host bridge).
    public static let slots: ClosedRange<Int> = 1...31

    public enum Register {
        public static let up: UInt64 = 0, down: UInt64 = 4, eject: UInt64 = 8, segment: UInt64 = 12
    }

    public nonisolated let loop: EventLoop
    /// Slots the guest ejected, in order: the device manager removes the device in each.
    public nonisolated let ejections: AsyncStream<Int>
    private let ejectionSink: AsyncStream<Int>.Continuation
    private(set) var up: UInt32 = 0
    private(set) var down: UInt32 = 0
    /// Slots that hold a device; the guest may eject these (whether the host asked or the guest's user
    /// did, as with Linux's `/sys/bus/pci/slots/N/power`), and only these.
    public private(set) var occupied: Set<Int> = []
    /// Ejections refused: slot 0 (the host bridge) or a slot without a device.
    public private(set) var refusedEjections = 0

    public init(loop: EventLoop) {
        self.loop = loop
        (ejections, ejectionSink) = AsyncStream.makeStream(of: Int.self)
    }

    /// A device now sits in `slot`. With `announce` (a hot-added device) the guest's next PCNT notifies the
    /// slot with "device check"; without (a device present at boot) the slot only becomes ejectable.
    public func slotAdded(_ slot: Int, announce: Bool = true) {
        precondition(Self.slots.contains(slot), "PCI hotplug slot \(slot) is not 1-31")
        occupied.insert(slot)
        if announce { up |= 1 << UInt32(slot) }
        down &= ~(1 << UInt32(slot))
    }

    /// Asks the guest to release the device in `slot`: the next PCNT notifies it with "eject request"; the
    /// guest's `_EJ0` then writes B0EJ and the slot arrives on ``ejections``.
    public func removalRequested(_ slot: Int) {
        precondition(Self.slots.contains(slot), "PCI hotplug slot \(slot) is not 1-31")
        guard occupied.contains(slot) else { return }
        down |= 1 << UInt32(slot)
        up &= ~(1 << UInt32(slot))
    }

    /// Ends ``ejections`` (the VM is going away).
    public func finish() { ejectionSink.finish() }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        guard width == 4 else { return 0 }
        switch offset {
        case Register.up:
            defer { up = 0 }
            return UInt64(up)
        case Register.down:
            defer { down = 0 }
            return UInt64(down)
        default:
            return 0  // B0EJ reads 0; PSEG: segment 0 is the only one
        }
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        guard width == 4, offset == Register.eject else { return }  // PSEG: only segment 0 exists
        var bits = UInt32(truncatingIfNeeded: value)
        while bits != 0 {
            let slot = bits.trailingZeroBitCount
            bits &= bits - 1
            guard occupied.remove(slot) != nil else {
                refusedEjections += 1
                Log.debug("pci hotplug: the guest ejected slot \(slot), which holds no device; ignored")
                continue
            }
            ejectionSink.yield(slot)
        }
    }
}
