@testable import ActorVmm
import Testing

@Suite struct GuestMemoryTests {
    @Test func readsAndWritesInsideRegions() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x10000), (GuestAddress(0x100000), 0x1000)])
        try memory.write(UInt32(0xDEADBEEF), at: GuestAddress(0xFFFC))
        #expect(try memory.read(UInt32.self, at: GuestAddress(0xFFFC)) == 0xDEADBEEF)
        try memory.write(bytes: [1, 2, 3], at: GuestAddress(0x100FFD))
        #expect(try memory.readBytes(at: GuestAddress(0x100FFD), count: 3) == [1, 2, 3])
        #expect(memory.totalSize == 0x11000)
    }

    /// Hostile addresses: past the end, straddling a region boundary, in a hole, overflowing, negative.
    @Test(arguments: [
        (UInt64(0xFFFD), 4), (UInt64(0x10000), 1), (UInt64(0x50000), 1), (UInt64(0x100FFF), 2),
        (UInt64.max, 1), (UInt64.max - 2, 8), (UInt64(0), -1), (UInt64(0), 0x20000),
    ])
    func refusesAccessesOutsideRam(address: UInt64, count: Int) throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x10000), (GuestAddress(0x100000), 0x1000)])
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(address), count: count)) {
            _ = try memory.readBytes(at: GuestAddress(address), count: max(count, 0) == count ? count : count)
        }
        #expect(!memory.contains(GuestAddress(address), count: count))
    }

    @Test func rejectsBadLayouts() {
        #expect(throws: GuestMemoryError.self) { try GuestMemory(layout: [(GuestAddress(0), 0)]) }
        #expect(throws: GuestMemoryError.self) { try GuestMemory(layout: [(GuestAddress(0), 100)]) }
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(layout: [(GuestAddress(0), 0x2000), (GuestAddress(0x1000), 0x1000)])
        }
    }

    @Test func checkedAddingDetectsOverflow() {
        #expect(GuestAddress(UInt64.max).checkedAdding(1) == nil)
        #expect(GuestAddress(1).checkedAdding(2) == GuestAddress(3))
    }

    @Test func cStringsAreBounded() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x1000)])
        try memory.write(bytes: Array("abc".utf8) + [0], at: GuestAddress(0x10))
        #expect(try memory.readCString(at: GuestAddress(0x10), limit: 100) == Array("abc".utf8))
        try memory.write(bytes: [UInt8](repeating: 0x41, count: 0x1000), at: GuestAddress(0))
        #expect(try memory.readCString(at: GuestAddress(0), limit: 8).count == 8)
        #expect(throws: GuestMemoryError.self) { try memory.readCString(at: GuestAddress(0xFF0), limit: 100) }
    }
}
