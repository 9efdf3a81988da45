/// Where a serial port's transmitted bytes go: the terminal, a file, or nowhere.
///
/// The UART calls ``write(_:)`` synchronously, once per byte the guest writes to its transmit register, from
/// inside the UART actor's isolation. That isolation may be held by the device loop's thread or by a vCPU
/// thread handling an exit inline, so an implementation must be `Sendable`; calls for one UART never overlap.
/// Keep `write` short and non-allocating: the guest's vCPU waits for it before it runs again.
public protocol SerialOutput: Sendable {
    /// Delivers `bytes`, which are valid only for the duration of the call.
    func write(_ bytes: UnsafeRawBufferPointer)
}

/// A serial output that drops everything (`--serial null`): the guest still sees a working UART.
public struct DiscardOutput: SerialOutput {
    public init() {}

    public func write(_ bytes: UnsafeRawBufferPointer) {}
}
