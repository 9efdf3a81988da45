import ActorVmm
import EpollLoop

/// The ACPI Generic Event Device (ACPI 6.5 §5.6.9) as Cloud Hypervisor lays it out: one MMIO byte of event
/// bits and an interrupt. The VMM sets bits and raises the interrupt (``notify(_:)``); the guest's `_EVT`
/// (Boot's `GedAml`) reads the byte, which returns the pending bits and clears them, and runs the scan
/// method or `Notify` each bit stands for. Writes are ignored.
public actor AcpiGed: BusDevice {
    /// Size of the register block.
    public static let size: UInt64 = 1

    /// The event bits, the same as the DSDT's `_EVT` tests (Boot's `AcpiHotplug.Event`).
    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// A vCPU is being inserted or removed: `\_SB.CPUS.CSCN`.
        public static let cpu = Events(rawValue: 1)
        /// A memory slot was filled: `\_SB.MHPC.MSCN`.
        public static let memory = Events(rawValue: 2)
        /// A PCI slot came up or should go: `\_SB.PCI0.PCNT`.
        public static let pci = Events(rawValue: 4)
        /// The power button was pressed: `Notify (\_SB.PWRB, 0x80)`.
        public static let powerButton = Events(rawValue: 8)
    }

    public nonisolated let loop: EventLoop
    let interrupt: any InterruptSink
    /// Bits set since the guest last read the register.
    public private(set) var pending: Events = []
    /// How many interrupts were raised (for tests and counters).
    public private(set) var interruptsRaised = 0

    public init(loop: EventLoop, interrupt: any InterruptSink) {
        self.loop = loop
        self.interrupt = interrupt
    }

    /// Records `events` and raises the interrupt.
    public func notify(_ events: Events) {
        pending.formUnion(events)
        interruptsRaised += 1
        interrupt.trigger()
    }

    /// Presses the power button: Linux then powers off in an orderly way (through `\_S5`).
    public func pressPowerButton() { notify(.powerButton) }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        guard offset == 0 else { return 0 }
        let value = pending.rawValue
        pending = []
        return UInt64(value)
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {}
}
