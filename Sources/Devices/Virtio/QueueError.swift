import ActorVmm

/// Why a virtqueue operation failed. Every case is caused by the guest driver (the VMM never crashes on it):
/// a bad *request* is returned to the driver unused (length 0); a bad *ring* makes the device set
/// DEVICE_NEEDS_RESET.
public enum QueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The queue is not ready, or its size is not a power of two up to the maximum.
    case invalidConfiguration(String)
    /// A ring or table is misaligned or lies (partly) outside guest RAM.
    case ringOutsideMemory(String)
    /// The available index moved by more than the queue size: a corrupt or malicious driver.
    case availIndexJump(from: UInt16, to: UInt16)
    /// The available ring names a head descriptor that is not below the queue size: there is no request
    /// to return, so the ring cannot be trusted.
    case headOutOfRange(UInt16)
    /// A descriptor index is not below the queue (or indirect table) size.
    case descriptorIndexOutOfRange(UInt16)
    /// A chain visits more descriptors than its table holds: a loop.
    case chainTooLong
    /// An indirect descriptor inside an indirect table, or with NEXT set, or with a bad length.
    case invalidIndirect(String)
    /// A buffer lies (partly) outside guest RAM.
    case bufferOutsideMemory(GuestAddress, length: UInt32)
    /// A device-readable buffer follows a device-writable one.
    case readableAfterWritable
    /// The request's buffers are not what the device type needs.
    case malformedRequest(String)
    /// Guest memory refused an access (should have been caught by validation).
    case memory(GuestMemoryError)
    /// The chain starting at descriptor `head` is malformed (`reason`): the device returns it to the driver
    /// on the used ring with length 0, as Firecracker and Cloud Hypervisor do, so the request completes.
    indirect case rejectedChain(head: UInt16, reason: QueueError)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): "invalid queue configuration: \(why)"
        case .ringOutsideMemory(let why): "queue ring outside guest memory: \(why)"
        case .availIndexJump(let from, let to): "available index jumped from \(from) to \(to)"
        case .headOutOfRange(let head): "available ring names head descriptor \(head), past the queue size"
        case .descriptorIndexOutOfRange(let index): "descriptor index \(index) out of range"
        case .chainTooLong: "descriptor chain longer than its table (a loop?)"
        case .invalidIndirect(let why): "invalid indirect descriptor: \(why)"
        case .bufferOutsideMemory(let address, let length): "buffer at \(address) of \(length) bytes is outside guest RAM"
        case .readableAfterWritable: "device-readable buffer after a device-writable one"
        case .malformedRequest(let why): "malformed request: \(why)"
        case .memory(let error): "\(error)"
        case .rejectedChain(let head, let reason): "request \(head) returned unused: \(reason)"
        }
    }

    /// True when the ring itself is unusable, so the device must set DEVICE_NEEDS_RESET instead of failing
    /// just one request.
    public var breaksTheRing: Bool {
        switch self {
        case .availIndexJump, .headOutOfRange, .ringOutsideMemory, .invalidConfiguration, .memory: true
        default: false
        }
    }
}
