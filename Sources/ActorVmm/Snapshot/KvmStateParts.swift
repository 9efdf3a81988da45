import CKvm
import EpollLoop

/// A state made of named parts, each the raw bytes of one KVM structure (`struct kvm_regs`, …) or a small
/// list of our own. Encoded as a count, then per part: tag u32 | blob. Parts are written in tag order; a
/// reader refuses unknown or repeated tags (a newer writer bumps the format version instead).
public struct KvmStateParts: Sendable, Equatable {
    public private(set) var parts: [UInt32: [UInt8]] = [:]
    public init() {}

    public subscript(tag: UInt32) -> [UInt8]? {
        get { parts[tag] }
        set { parts[tag] = newValue }
    }

    public var tags: [UInt32] { parts.keys.sorted() }

    public func encode(into out: inout SnapshotEncoder) {
        out.u32(UInt32(parts.count))
        for tag in tags {
            out.u32(tag)
            out.blob(parts[tag]!)
        }
    }

    /// Reads parts whose tags are in `known` (the names are used in error messages).
    public static func decode(_ input: inout SnapshotDecoder, known: [UInt32: String]) throws(SnapshotError) -> KvmStateParts {
        var result = KvmStateParts()
        let count = try input.u32()
        guard count <= UInt32(known.count) else { throw .invalid("\(input.context): \(count) parts (at most \(known.count))") }
        for _ in 0..<count {
            let tag = try input.u32()
            guard let name = known[tag] else { throw .invalid("\(input.context): unknown part \(tag)") }
            guard result.parts[tag] == nil else { throw .invalid("\(input.context): part \(name) appears twice") }
            result.parts[tag] = try input.blob(limit: 1 << 20)
        }
        return result
    }
}

/// Ioctls that move one fixed-size KVM structure in or out as bytes.
enum KvmStructIO {
    /// `request` on `fd` into a zeroed buffer of `size` bytes; the bytes.
    static func get(_ fd: Int32, _ name: String, _ request: UInt, size: Int) throws(KvmError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        let result = bytes.withUnsafeMutableBytes { buffer in
            // SAFETY: the buffer holds `size` bytes, the size of the structure `request` writes.
            Result { () throws(KvmError) in try kvmIoctl(name) { ckvm_ioctl_ptr(fd, request, buffer.baseAddress) } }
        }
        _ = try result.get()
        return bytes
    }

    /// `request` on `fd` with `bytes`, which must be exactly `size` bytes (the structure's size).
    static func set(_ fd: Int32, _ name: String, _ request: UInt, _ bytes: [UInt8], size: Int,
                    owner: String) throws(SnapshotError) {
        guard bytes.count == size else {
            throw .invalid("\(owner) \(name): \(bytes.count) bytes, expected \(size)")
        }
        var copy = bytes
        let result = copy.withUnsafeMutableBytes { buffer in
            // SAFETY: the buffer holds exactly the structure's size (checked above).
            Result { () throws(KvmError) in try kvmIoctl(name) { ckvm_ioctl_ptr(fd, request, buffer.baseAddress) } }
        }
        if case .failure(let error) = result { throw .io("\(owner): \(error)") }
    }
}

extension Array where Element == UInt8 {
    /// The bytes of a plain C structure.
    init<T>(bytesOf value: T) {
        var copy = value
        self = Swift.withUnsafeBytes(of: &copy) { Array($0) }
    }
}
