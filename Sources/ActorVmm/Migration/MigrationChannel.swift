import EpollLoop
import Glibc

/// The live-migration wire protocol: framed messages over a stream socket (docs/snapshot.md).
///
/// ```
/// frame    type u8 | length u32 | crc32 of the payload u32 | payload
/// hello    "AVMMIGR\0" | version u32                       source → destination, first
/// config   the VM's configuration (opaque here)            source → destination; answered by ack
/// memory   region u32 | count u32 | per page: index u32, 4096 bytes    any number, in rounds
/// state    a VmSnapshot container without a memory section (vm, vcpus, devices)
/// complete end of the stream; answered by ack once the destination restored the VM
/// abort    reason (string): the sender gives up; the destination discards what it built
/// ack      ok (bool) | message (string)                    destination → source
/// ```
public enum MigrationFrame: UInt8, Sendable {
    case hello = 1, config, memory, state, complete, abort, ack

    public static let magic: [UInt8] = Array("AVMMIGR".utf8) + [0]
    public static let version: UInt32 = 1
    /// The largest payload accepted (a memory frame carries at most 256 pages).
    public static let maxPayload = 64 << 20
}

/// One end of a migration connection: blocking, framed reads and writes on a socket descriptor it owns.
/// Used from one thread at a time (the migration's own).
public final class MigrationChannel: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): the descriptor is only read and written by the one thread that runs the
    // migration; `close()` is called by that thread too, after the last use.
    public let fd: Int32
    private var closed = false
    /// Bytes written and read so far (for bandwidth estimates and reports).
    public private(set) var bytesSent: UInt64 = 0
    public private(set) var bytesReceived: UInt64 = 0

    public init(fd: Int32) { self.fd = fd }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    public func send(_ type: MigrationFrame, _ payload: [UInt8] = []) throws(SnapshotError) {
        var header = SnapshotEncoder()
        header.u8(type.rawValue)
        header.u32(UInt32(payload.count))
        header.u32(Crc32.checksum(payload))
        try writeAll(header.bytes, what: "\(type) frame")
        try writeAll(payload, what: "\(type) frame")
    }

    /// The next frame. A closed connection, a bad checksum or an unknown type is an error naming it.
    public func receive(expecting what: String) throws(SnapshotError) -> (MigrationFrame, [UInt8]) {
        var header = SnapshotDecoder(try readExactly(9, what: what), context: "migration frame header")
        let rawType = try header.u8(), length = try header.u32(), crc = try header.u32()
        guard let type = MigrationFrame(rawValue: rawType) else { throw .invalid("migration stream: unknown frame type \(rawType)") }
        guard length <= UInt32(MigrationFrame.maxPayload) else { throw .invalid("migration stream: \(type) frame of \(length) bytes") }
        let payload = try readExactly(Int(length), what: "\(type) frame")
        guard Crc32.checksum(payload) == crc else { throw .checksumMismatch("migration \(type) frame") }
        return (type, payload)
    }

    /// The next frame, which must be `type` (an abort from the peer becomes an error with its reason).
    public func receive(_ type: MigrationFrame) throws(SnapshotError) -> [UInt8] {
        let (got, payload) = try receive(expecting: "\(type) frame")
        if got == type { return payload }
        if got == .abort {
            var input = SnapshotDecoder(payload, context: "abort frame")
            throw .io("the peer aborted the migration: \((try? input.string()) ?? "no reason")")
        }
        throw .invalid("migration stream: \(got) frame where \(type) was expected")
    }

    /// Sends an ack (the destination's answer).
    public func acknowledge(_ error: SnapshotError?) throws(SnapshotError) {
        var out = SnapshotEncoder()
        out.bool(error == nil)
        out.string(error?.description ?? "")
        try send(.ack, out.bytes)
    }

    /// Waits for an ack; a negative one becomes an error with the destination's message.
    public func awaitAcknowledgement(for step: String) throws(SnapshotError) {
        var input = SnapshotDecoder(try receive(.ack), context: "ack frame")
        let ok = try input.bool()
        let message = try input.string(limit: 4096)
        guard ok else { throw .io("the destination refused the \(step): \(message)") }
    }

    private func writeAll(_ bytes: [UInt8], what: String) throws(SnapshotError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .io("migration connection failed while sending the \(what): \(Errno.current)") }
            done += n
        }
        bytesSent &+= UInt64(bytes.count)
    }

    private func readExactly(_ count: Int, what: String) throws(SnapshotError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, count - done, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw .io(n == 0 ? "migration connection closed while receiving the \(what)"
                                 : "migration connection failed while receiving the \(what): \(Errno.current)")
            }
            done += n
        }
        bytesReceived &+= UInt64(count)
        return bytes
    }
}
