import ActorVmm
import EpollLoop

/// The ACPI sleep-control and reset registers of a hardware-reduced platform, in one I/O byte at 0x600
/// (the FADT names it as both `SLEEP_CONTROL_REG` and `RESET_REG`, as Cloud Hypervisor does).
///
/// - Writing SLP_EN (bit 5) with SLP_TYP = 5 (S5, bits 2–4), i.e. 0x34, powers the VM off (exit code 0).
/// - Writing the reset value 1 asks for a reset.
/// Reads return 0 (no wake status).
public actor AcpiPowerDevice: BusDevice {
    public static let port: UInt64 = 0x600
    public static let size: UInt64 = 8
    public static let s5SleepValue: UInt64 = (5 << 2) | (1 << 5)  // 0x34
    public static let resetValue: UInt64 = 1

    public nonisolated let loop: EventLoop
    let power: any PowerControl

    public init(loop: EventLoop, power: any PowerControl) {
        self.loop = loop
        self.power = power
    }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        guard offset == 0 else { return }
        switch value & 0xFF {
        case Self.s5SleepValue: power.requestStop(.poweredOff)
        case Self.resetValue: power.requestStop(.resetRequested(source: "ACPI reset register"))
        default: Log.debug("acpi: ignored write \(hex(value)) to the sleep control register")
        }
    }
}
