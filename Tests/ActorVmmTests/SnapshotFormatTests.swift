@testable import ActorVmm
import Glibc
import Testing

/// The snapshot container and codec: round trips, and every kind of bad input is a one-line error.
@Suite struct SnapshotFormatTests {
    static func sample() -> [UInt8] {
        var vcpu = VcpuState(id: 0)
        vcpu[.regs] = Array(repeating: 7, count: 144)
        vcpu[.sregs] = [1, 2, 3]
        vcpu[.lapic] = [4]
        vcpu[.mpState] = [0, 0, 0, 0]
        vcpu[.events] = [9]
        vcpu[.msrs] = VcpuState.encodeMsrs([(0x10, 12345), (0xC000_0080, 0xD01)])
        return SnapshotContainer.encode([
            .init(.config, Array("{\"cpus\":1}".utf8)),
            .init(.vcpu, vcpu.encode()),
            .init(.memory, MemoryImage(fileName: "memory.bin", fileSize: 8192, regions: [(0, 8192)]).encode()),
        ])
    }

    @Test func crc32MatchesZlib() {
        #expect(Crc32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(Crc32.checksum([UInt8]()) == 0)
        // The C shim's slice-by-8 against the bit-at-a-time definition: every length up to 40 (the 8-byte
        // steps and the tail), every alignment, a continued checksum, and a slice.
        func bitwise(_ bytes: [UInt8]) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                c ^= UInt32(byte)
                for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            }
            return ~c
        }
        let data = (0..<48).map { UInt8(truncatingIfNeeded: $0 &* 167 &+ 13) }
        for start in 0..<8 {
            for length in 0...40 {
                let piece = Array(data[start..<(start + length)])
                #expect(Crc32.checksum(piece) == bitwise(piece), "\(length) bytes from \(start)")
                #expect(Crc32.checksum(data[start..<(start + length)]) == bitwise(piece))
            }
        }
        #expect(Crc32.checksum(data[20...], continuing: Crc32.checksum(data[..<20])) == bitwise(data))
    }

    @Test func codecRoundTripsEveryFieldKind() throws {
        var out = SnapshotEncoder()
        out.u32(7); out.u8(0xAB); out.bool(true); out.u16(0xBEEF); out.u64(.max); out.string("disk0"); out.blob([1, 2])
        var input = SnapshotDecoder(out.bytes, context: "t")
        #expect(try input.u32() == 7 && input.u8() == 0xAB && input.bool() && input.u16() == 0xBEEF && input.u64() == .max)
        #expect(try input.string() == "disk0" && input.blob() == [1, 2])
        try input.finish()
        #expect(throws: SnapshotError.truncated("t: needed 1 bytes at offset \(out.bytes.count), 0 left")) { try input.u8() }
    }

    @Test func roundTrip() throws {
        let sections = try SnapshotContainer.decode(Self.sample(), name: "state.bin")
        #expect(sections.map(\.id) == [.config, .vcpu, .memory])
        let vcpu = try VcpuState.decode(sections[1].payload)
        #expect(vcpu[.regs] == Array(repeating: 7, count: 144))
        #expect(try vcpu.msrs.map(\.index) == [0x10, 0xC000_0080])
        #expect(try vcpu.msrs.map(\.value) == [12345, 0xD01])
        let memory = try MemoryImage.decode(sections[2].payload)
        #expect(memory.fileSize == 8192)
    }

    @Test func everyTruncationIsAnError() {
        let bytes = Self.sample()
        for length in 0..<bytes.count {
            #expect(throws: SnapshotError.self) { try SnapshotContainer.decode(Array(bytes[0..<length]), name: "state.bin") }
        }
    }

    @Test func truncationNamesTheSection() {
        let bytes = Self.sample()
        do {
            _ = try SnapshotContainer.decode(Array(bytes.dropLast(10)), name: "state.bin")
            Issue.record("a truncated snapshot was accepted")
        } catch {
            #expect(error.description == "snapshot truncated: state.bin section 2 (memory): 42 bytes announced, 32 left")
        }
    }

    @Test func everyFlippedByteIsAnError() {
        let bytes = Self.sample()
        for index in bytes.indices {
            var corrupted = bytes
            corrupted[index] ^= 0x5A
            #expect(throws: SnapshotError.self, "byte \(index)") { try SnapshotContainer.decode(corrupted, name: "s") }
        }
    }

    @Test func corruptedPayloadIsAChecksumMismatch() {
        var bytes = Self.sample()
        bytes[bytes.count - 3] ^= 1
        #expect(throws: SnapshotError.checksumMismatch("s section 2 (memory)")) { try SnapshotContainer.decode(bytes, name: "s") }
    }

    @Test func otherVersionAndBadMagic() {
        var bytes = Self.sample()
        bytes[8] = 2
        #expect(throws: SnapshotError.unsupportedVersion(found: 2, expected: 1)) { try SnapshotContainer.decode(bytes, name: "s") }
        #expect(SnapshotError.unsupportedVersion(found: 2, expected: 1).description
                == "snapshot format version 2 is not supported (this build reads version 1)")
        #expect(throws: SnapshotError.notASnapshot("x.bin")) { try SnapshotContainer.decode(Array("hello world, not a snapshot".utf8), name: "x.bin") }
    }

    @Test func trailingBytesAndUnknownPartsAreRefused() {
        var out = SnapshotEncoder()
        out.u32(0)
        out.u32(1)
        out.u32(99)  // unknown part tag
        out.blob([1])
        #expect(throws: SnapshotError.invalid("vcpu0: unknown part 99")) { try VcpuState.decode(out.bytes) }
        var bytes = VcpuState(id: 0).encode()
        #expect(throws: SnapshotError.missing("regs in vcpu0")) { try VcpuState.decode(bytes) }
        bytes.append(0)
        #expect(throws: SnapshotError.self) { try VcpuState.decode(bytes) }
    }

    @Test func memoryImageRefusesPathsAndMismatchedSizes() {
        var bad = MemoryImage(fileName: "../etc/passwd", fileSize: 4096, regions: [(0, 4096)])
        #expect(throws: SnapshotError.self) { try MemoryImage.decode(bad.encode()) }
        bad = MemoryImage(fileName: "memory.bin", fileSize: 8192, regions: [(0, 4096)])
        #expect(throws: SnapshotError.invalid("memory section: regions add up to 4096 bytes, the file has 8192")) {
            try MemoryImage.decode(bad.encode())
        }
    }

    @Test func memoryImageIsSparseAndRoundTrips() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20), (GuestAddress(0x1000_0000), 64 << 10)])
        try memory.write(UInt64(0x1122_3344_5566_7788), at: GuestAddress(0x5008))
        try memory.write(bytes: [9, 8, 7], at: GuestAddress(0x1000_3FFD))
        let path = "/tmp/actorvmm-memimage-\(getpid()).bin"
        defer { unlink(path) }
        let image = try MemoryImage.write(memory, to: path)
        var info = stat()
        stat(path, &info)
        #expect(UInt64(info.st_size) == memory.totalSize)
        #expect(info.st_blocks * 512 <= 64 << 10, "zero pages are holes (\(info.st_blocks) blocks)")
        let copy = try GuestMemory(layout: [(GuestAddress(0), 1 << 20), (GuestAddress(0x1000_0000), 64 << 10)])
        try copy.write(UInt64(0xBAD), at: GuestAddress(0x9000))  // where the snapshot has a hole (a loaded kernel, say)
        try image.read(into: copy, from: path)
        #expect(try copy.read(UInt64.self, at: GuestAddress(0x9000)) == 0, "holes read back as zero")
        #expect(try copy.read(UInt64.self, at: GuestAddress(0x5008)) == 0x1122_3344_5566_7788)
        #expect(try copy.readBytes(at: GuestAddress(0x1000_3FFD), count: 3) == [9, 8, 7])
        let other = try GuestMemory(layout: [(GuestAddress(0), 2 << 20)])
        #expect(throws: SnapshotError.self) { try image.read(into: other, from: path) }
        truncate(path, 4096)
        #expect(throws: SnapshotError.truncated("\(path) has 4096 bytes, the snapshot says \(memory.totalSize)")) {
            try image.read(into: copy, from: path)
        }
    }
}
