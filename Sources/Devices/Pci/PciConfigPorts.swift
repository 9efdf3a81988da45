import ActorVmm
import Synchronization

/// PCI configuration mechanism #1: CONFIG_ADDRESS at port 0xCF8, CONFIG_DATA at 0xCFC–0xCFF.
///
/// Runs on the vCPU thread as a ``BusRouter``: a write to CONFIG_ADDRESS is stored in an atomic; a
/// CONFIG_DATA access is forwarded to the addressed function's configuration window (an actor), so the
/// access reaches the device through the normal exit hand-off. Like real hardware, CONFIG_ADDRESS is one
/// register for the whole machine: drivers serialise their use of it (Linux holds `pci_config_lock`).
public final class PciConfigPorts: BusRouter {
    public static let port: UInt64 = 0xCF8
    public static let size: UInt64 = 8

    /// Configuration windows of bus 0, indexed by device number (function 0 only).
    let functions: [BusTarget?]
    /// CONFIG_ADDRESS. Shared by the ports remade when a slot changes, so a guest that latched an address
    /// before a hotplug swapped the buses reads CONFIG_DATA of that address after it.
    let latch: PciConfigAddress

    public init(functions: [BusTarget?], latch: PciConfigAddress = PciConfigAddress()) {
        precondition(functions.count <= 32)
        self.functions = functions
        self.latch = latch
    }

    public func resolve(offset: UInt64, width: Int, write: UInt64?) -> BusRoute {
        if offset < 4 {
            // CONFIG_ADDRESS: only whole-register accesses mean anything.
            guard offset == 0, width == 4 else { return .handled(write == nil ? allOnes(width) : 0) }
            if let value = write {
                latch.value.store(UInt32(truncatingIfNeeded: value) & 0x80FF_FFFC, ordering: .relaxed)
                return .handled(0)
            }
            return .handled(UInt64(latch.value.load(ordering: .relaxed)))
        }
        let config = latch.value.load(ordering: .relaxed)
        let bus = (config >> 16) & 0xFF, device = Int((config >> 11) & 0x1F), function = (config >> 8) & 0x7
        guard config & 0x8000_0000 != 0, bus == 0, function == 0, device < functions.count,
              let target = functions[device] else {
            return .handled(write == nil ? allOnes(width) : 0)  // no such function: reads all-ones
        }
        let register = UInt64(config & 0xFC) + (offset - 4)
        return .forward(target, offset: register)
    }
}

/// The CONFIG_ADDRESS register of configuration mechanism #1, one per machine (see ``PciConfigPorts``).
public final class PciConfigAddress: Sendable {
    let value = Atomic<UInt32>(0)
    public init() {}
    /// The latched address (for tests).
    public var current: UInt32 { value.load(ordering: .relaxed) }
}

/// All-ones in the low `width` bytes (what a PC bus returns when nobody answers).
func allOnes(_ width: Int) -> UInt64 { width >= 8 ? ~0 : (1 << (UInt64(width) * 8)) - 1 }
