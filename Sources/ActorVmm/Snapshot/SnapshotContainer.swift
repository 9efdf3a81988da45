/// The snapshot container: a header and checksummed, typed sections (docs/snapshot.md has the layout).
///
/// ```
/// header   magic "AVMSNAP\0" (8) | version u32 | section count u32 | crc32 of the 16 bytes before (u32)
/// section  id u32 | length u64 | crc32 of the payload u32 | payload (length bytes)
/// ```
/// All integers little-endian. Unknown section ids are an error (a newer writer would bump the version).
public enum SnapshotContainer {
    public static let magic: [UInt8] = Array("AVMSNAP".utf8) + [0]
    public static let version: UInt32 = 1
    static let headerSize = 20
    static let sectionHeaderSize = 16

    /// Section ids. The payload of each is described where it is produced.
    public enum SectionID: UInt32, Sendable, CaseIterable {
        /// The VM's configuration, as the control plane writes it (opaque here).
        case config = 1
        /// In-kernel interrupt controllers, clock and PIT (``VmKernelState``).
        case vm = 2
        /// One vCPU (``VcpuState``); one section per vCPU.
        case vcpu = 3
        /// One device: its id (string) then its own state; one section per device.
        case device = 4
        /// Guest memory: the region table and the name and size of the memory file (``MemoryImage``).
        case memory = 5

        var name: String {
            switch self {
            case .config: "config"
            case .vm: "vm"
            case .vcpu: "vcpu"
            case .device: "device"
            case .memory: "memory"
            }
        }
    }

    public struct Section: Sendable, Equatable {
        public var id: SectionID
        public var payload: [UInt8]
        public init(_ id: SectionID, _ payload: [UInt8]) {
            self.id = id
            self.payload = payload
        }
    }

    /// The whole container as bytes.
    public static func encode(_ sections: [Section]) -> [UInt8] {
        var out = SnapshotEncoder()
        out.raw(magic)
        out.u32(version)
        out.u32(UInt32(sections.count))
        out.u32(Crc32.checksum(out.bytes))
        for section in sections {
            out.u32(section.id.rawValue)
            out.u64(UInt64(section.payload.count))
            out.u32(Crc32.checksum(section.payload))
            out.raw(section.payload)
        }
        return out.bytes
    }

    /// Reads a container written by ``encode(_:)``; `name` (a path) is used in error messages.
    public static func decode(_ bytes: [UInt8], name: String) throws(SnapshotError) -> [Section] {
        guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else { throw .notASnapshot(name) }
        var input = SnapshotDecoder(bytes, context: "\(name) header")
        _ = try input.raw(magic.count)
        let found = try input.u32()
        guard found == version else { throw .unsupportedVersion(found: found, expected: version) }
        let count = try input.u32()
        let headerCrc = try input.u32()
        guard headerCrc == Crc32.checksum(bytes[0..<(headerSize - 4)]) else { throw .checksumMismatch("\(name) header") }
        var sections: [Section] = []
        for index in 0..<Int(count) {
            input.context = "\(name) section \(index) of \(count)"
            let rawID = try input.u32()
            guard let id = SectionID(rawValue: rawID) else { throw .invalid("\(input.context): unknown section id \(rawID)") }
            input.context = "\(name) section \(index) (\(id.name))"
            let length = try input.u64()
            let crc = try input.u32()
            guard length <= UInt64(input.remaining) else {
                throw .truncated("\(input.context): \(length) bytes announced, \(input.remaining) left")
            }
            let payload = try input.raw(Int(length))
            guard Crc32.checksum(payload) == crc else { throw .checksumMismatch(input.context) }
            sections.append(Section(id, payload))
        }
        input.context = name
        try input.finish()
        return sections
    }
}
