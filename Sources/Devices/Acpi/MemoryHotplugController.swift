import ActorVmm
import EpollLoop

/// The memory hotplug register block (Cloud Hypervisor's memory manager device) behind the DSDT's
/// `\_SB.MHPC` (Boot's `MemoryHotplugAml`), one slot per hot-added RAM range:
///
/// | offset | width | read | write |
/// | --- | --- | --- | --- |
/// | 0 | 4 | MHBL: the selected slot's base, low half | MSEL: selects a slot |
/// | 4 | 4 | MHBH: base, high half | MOEV: the `_OST` source event |
/// | 8 | 4 | MHLL: length, low half | MOSC: the `_OST` status code |
/// | 0xC | 4 | MHLH: length, high half | ignored |
/// | 0x10 | 4 | MHPX: proximity domain (0) | ignored |
/// | 0x14 | 1 | bit 0 enabled (MEN_), 1 inserting (MINS), 2 removing (MRMV) | 1 in bit 1/2 acknowledges; bit 3 (eject) is refused: RAM is not removed |
///
/// The VMM maps the RAM and registers it with KVM first, then calls ``plug(base:length:)`` and raises the
/// GED's memory event; the guest's `MSCN` notifies the slot, reads its `_CRS` and adds the memory, then
/// reports through `_OST` (``lastOst(_:)``).
public actor MemoryHotplugController: BusDevice {
    public static let size: UInt64 = 0x18

    public enum Register {
        public static let baseLow: UInt64 = 0, baseHigh: UInt64 = 4, lengthLow: UInt64 = 8, lengthHigh: UInt64 = 0xC
        public static let proximity: UInt64 = 0x10, status: UInt64 = 0x14
        /// Write-only aliases.
        public static let selector: UInt64 = 0, ostEvent: UInt64 = 4, ostStatus: UInt64 = 8
    }
    public enum Status {
        public static let enabled: UInt8 = 1 << 0, inserting: UInt8 = 1 << 1, removing: UInt8 = 1 << 2, eject: UInt8 = 1 << 3
    }

    /// One memory slot.
    public struct Slot: Equatable, Sendable {
        public var base: UInt64 = 0
        public var length: UInt64 = 0
        public var enabled = false, inserting = false, removing = false
        /// The last `_OST` (source event, status code) the guest reported: status 0 is success.
        public var ost: (event: UInt32, status: UInt32)? {
            get { ostEvent.map { ($0, ostStatus) } }
            set { ostEvent = newValue?.event; ostStatus = newValue?.status ?? 0 }
        }
        var ostEvent: UInt32?
        var ostStatus: UInt32 = 0
    }

    public nonisolated let loop: EventLoop
    public private(set) var slots: [Slot]
    var selected: UInt32 = 0
    var pendingOstEvent: UInt32 = 0

    public init(loop: EventLoop, slots: Int) {
        self.loop = loop
        self.slots = [Slot](repeating: Slot(), count: slots)
    }

    /// Fills the first free slot with [base, base + length) and marks it inserting; returns the slot, or nil
    /// when every slot is in use.
    public func plug(base: UInt64, length: UInt64) -> Int? {
        guard let index = slots.firstIndex(where: { !$0.enabled }) else { return nil }
        slots[index] = Slot(base: base, length: length, enabled: true, inserting: true)
        return index
    }

    /// What the guest last reported through slot `slot`'s `_OST`, or nil.
    public func lastOst(_ slot: Int) -> (event: UInt32, status: UInt32)? {
        slots.indices.contains(slot) ? slots[slot].ost : nil
    }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        guard slots.indices.contains(Int(selected)) else { return 0 }
        let slot = slots[Int(selected)]
        switch (offset, width) {
        case (Register.baseLow, 4): return slot.base & 0xFFFF_FFFF
        case (Register.baseHigh, 4): return slot.base >> 32
        case (Register.lengthLow, 4): return slot.length & 0xFFFF_FFFF
        case (Register.lengthHigh, 4): return slot.length >> 32
        case (Register.status, 1):
            return UInt64((slot.enabled ? Status.enabled : 0) | (slot.inserting ? Status.inserting : 0)
                          | (slot.removing ? Status.removing : 0))
        default: return 0
        }
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        let value32 = UInt32(truncatingIfNeeded: value)
        switch (offset, width) {
        case (Register.selector, 4):
            selected = value32
        case (Register.ostEvent, 4):
            pendingOstEvent = value32
        case (Register.ostStatus, 4):
            guard slots.indices.contains(Int(selected)) else { return }
            slots[Int(selected)].ost = (pendingOstEvent, value32)
            if value32 != 0 {
                Log.warning("memory hotplug: the guest reports status \(value32) for event \(hex(UInt64(pendingOstEvent))) on slot \(selected)")
            } else {
                Log.info("memory hotplug: the guest reports success for event \(hex(UInt64(pendingOstEvent))) on slot \(selected)")
            }
        case (Register.status, 1):
            guard slots.indices.contains(Int(selected)) else { return }
            let bits = UInt8(truncatingIfNeeded: value)
            if bits & Status.inserting != 0 { slots[Int(selected)].inserting = false }
            if bits & Status.removing != 0 { slots[Int(selected)].removing = false }
            if bits & Status.eject != 0 { Log.debug("memory hotplug: the guest asked to eject slot \(selected); RAM is not removed") }
        default:
            break
        }
    }
}
