import ActorVmm
import EpollLoop

/// The minimal i8042 keyboard controller a PC guest expects: only its reset line is wired.
/// Writing 0xFE (pulse reset) to the command port 0x64 asks for a reset; everything else reads 0.
public actor I8042: BusDevice {
    /// Ports 0x60 (data) to 0x64 (status/command); the device sees offsets 0 and 4.
    public static let port: UInt64 = 0x60
    public static let size: UInt64 = 5
    static let commandOffset: UInt64 = 4
    static let pulseResetCommand: UInt64 = 0xFE

    public nonisolated let loop: EventLoop
    let power: any PowerControl

    public init(loop: EventLoop, power: any PowerControl) {
        self.loop = loop
        self.power = power
    }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        if offset == Self.commandOffset && value & 0xFF == Self.pulseResetCommand {
            power.requestStop(.resetRequested(source: "i8042 reset command 0xFE"))
        }
    }
}
