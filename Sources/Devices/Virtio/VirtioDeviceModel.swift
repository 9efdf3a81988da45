import ActorVmm

/// Virtio device types (virtio 1.2 §5) that ActorVMM implements.
public enum VirtioDeviceType: UInt16, Sendable {
    case net = 1, block = 2, console = 3, entropy = 4, memory = 24

    /// PCI class, subclass for the configuration header.
    var pciClass: (UInt8, UInt8) {
        switch self {
        case .net: (0x02, 0x00)
        case .block: (0x01, 0x80)
        case .console: (0x07, 0x80)
        case .entropy: (0x00, 0xFF)
        case .memory: (0xFF, 0x00)  // "other", as Cloud Hypervisor's virtio-mem
        }
    }
}

/// Feature bits common to all devices (virtio 1.2 §6).
public enum VirtioFeature {
    public static let ringIndirectDescriptors: UInt64 = 1 << 28
    public static let ringEventIndex: UInt64 = 1 << 29
    public static let version1: UInt64 = 1 << 32
}

/// What one kind of virtio device does; the transport (``VirtioPciDevice``) does the rest.
///
/// A backend is not `Sendable`: it lives inside its device actor and every method is called with that
/// actor's isolation, receiving the actor as an `isolated` parameter so it can pop and complete requests,
/// raise interrupts and register host descriptors on the device's loop — all synchronously, without locks.
public protocol VirtioDeviceModel: AnyObject {
    var deviceType: VirtioDeviceType { get }
    var queueCount: Int { get }
    /// The largest queue the device offers (the queue_size a reset leaves); a power of 2 up to
    /// ``SplitQueue/maxSize``, which is the default.
    var maxQueueSize: UInt16 { get }
    /// Device-specific feature bits (the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX).
    var deviceFeatures: UInt64 { get }
    /// Bytes of device configuration space.
    var configSize: Int { get }
    func readConfig(offset: Int, width: Int) -> UInt64
    func writeConfig(offset: Int, width: Int, value: UInt64)
    /// DRIVER_OK: start serving. Throwing sets DEVICE_NEEDS_RESET.
    func activate(device: isolated VirtioPciDevice) throws(VirtioError)
    /// The driver notified queue `index` (a doorbell).
    func queueNotified(_ index: Int, device: isolated VirtioPciDevice)
    /// A host descriptor the backend registered became ready (`token` is the backend's own).
    func hostEvent(_ token: Int, device: isolated VirtioPciDevice)
    /// Device reset: stop serving, drop host registrations, forget driver state.
    func reset(device: isolated VirtioPciDevice)
    /// Snapshot: stop taking host input (drop host registrations); queues are not served meanwhile.
    func quiesce(device: isolated VirtioPciDevice)
    /// After ``quiesce(device:)`` or a restore: if the device is active, take host input again.
    func resume(device: isolated VirtioPciDevice)
    /// The backend's own state for a snapshot (what is in flight between host and guest), or empty.
    func captureState() -> [UInt8]
    /// Loads what ``captureState()`` returned.
    func restoreState(_ bytes: [UInt8]) throws(SnapshotError)

    // Per-queue placement (VirtioPciDevice+QueueWorkers.swift): a device's backend and its workers' backends.
    /// The device-wide settings a queue worker's backend follows, as the device's backend has them.
    func queueWorkerSettings() -> [UInt8]
    /// A worker's backend takes the settings of ``queueWorkerSettings()``.
    func applyQueueWorkerSettings(_ settings: [UInt8], device: isolated VirtioPciDevice)
    /// The backend's state that belongs to queue group `group` (a device's backend: the worker's number; a
    /// worker's: its own), moved out: the backend forgets it.
    func takeQueueGroupState(_ group: Int) -> [UInt8]
    /// Takes what ``takeQueueGroupState(_:)`` gave.
    func giveQueueGroupState(_ group: Int, _ bytes: [UInt8])
}

extension VirtioDeviceModel {
    public var maxQueueSize: UInt16 { SplitQueue.maxSize }
    public func writeConfig(offset: Int, width: Int, value: UInt64) {}
    public func hostEvent(_ token: Int, device: isolated VirtioPciDevice) {}
    public func quiesce(device: isolated VirtioPciDevice) {}
    public func resume(device: isolated VirtioPciDevice) {}
    public func captureState() -> [UInt8] { [] }
    public func restoreState(_ bytes: [UInt8]) throws(SnapshotError) {
        guard bytes.isEmpty else { throw .invalid("\(deviceType) backend: \(bytes.count) bytes of state, expected none") }
    }
    public func queueWorkerSettings() -> [UInt8] { [] }
    public func applyQueueWorkerSettings(_ settings: [UInt8], device: isolated VirtioPciDevice) {}
    public func takeQueueGroupState(_ group: Int) -> [UInt8] { [] }
    public func giveQueueGroupState(_ group: Int, _ bytes: [UInt8]) {}
}

/// Host-side failures of a virtio device (the guest sees DEVICE_NEEDS_RESET or an I/O error status).
public struct VirtioError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Per-device counters (the API's `vm.counters`).
public struct VirtioCounters: Sendable, Equatable {
    public var notifications: UInt64 = 0
    public var requests: UInt64 = 0
    public var bytesRead: UInt64 = 0     // bytes the device read from the guest (transmitted, written to disk)
    public var bytesWritten: UInt64 = 0  // bytes the device wrote into the guest
    public var errors: UInt64 = 0
    public var interrupts: UInt64 = 0
    public var dropped: UInt64 = 0
    public init() {}
}

/// Little-endian reads from a byte image, for device configuration spaces.
func readLE(_ bytes: [UInt8], offset: Int, width: Int) -> UInt64 {
    var value: UInt64 = 0
    for i in 0..<width where offset + i >= 0 && offset + i < bytes.count {
        value |= UInt64(bytes[offset + i]) << (8 * i)
    }
    return value
}

/// Appends `value` as `width` little-endian bytes.
func appendLE<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
    withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
}
