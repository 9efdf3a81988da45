@testable import ActorVmm
import Glibc
import Testing

/// `GuestMemory.discard` (virtio-mem's unplug): the pages read zero afterwards; a range that is not
/// page-aligned, leaves its region or lies outside RAM is refused before any page is touched.
@Suite struct GuestMemoryDiscardTests {
    @Test func discardedPagesReadZeroAndNothingElseChanges() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x10000), (GuestAddress(0x100000), 0x4000)])
        try memory.write(bytes: [UInt8](repeating: 0xAB, count: 0x10000), at: GuestAddress(0))
        try memory.write(bytes: [UInt8](repeating: 0xCD, count: 0x4000), at: GuestAddress(0x100000))
        try memory.discard(at: GuestAddress(0x2000), count: 0x3000)
        #expect(try memory.readBytes(at: GuestAddress(0x2000), count: 0x3000).allSatisfy { $0 == 0 })
        #expect(try memory.readBytes(at: GuestAddress(0x1000), count: 0x1000).allSatisfy { $0 == 0xAB })
        #expect(try memory.readBytes(at: GuestAddress(0x5000), count: 0xB000).allSatisfy { $0 == 0xAB })
        for (address, count) in [(UInt64(0x2001), 0x1000), (0x2000, 0x1001), (0xF000, 0x2000), (0x10000, 0x1000),
                                 (0x103000, 0x2000), (UInt64.max & ~0xFFF, 0x1000), (0, -0x1000)] {
            #expect(throws: GuestMemoryError.self, "\(address) +\(count)") { try memory.discard(at: GuestAddress(address), count: count) }
        }
        #expect(try memory.readBytes(at: GuestAddress(0x100000), count: 0x4000).allSatisfy { $0 == 0xCD })
        #expect(try memory.readBytes(at: GuestAddress(0xF000), count: 0x1000).allSatisfy { $0 == 0xAB })
        try memory.discard(at: GuestAddress(0), count: 0)  // nothing to do
    }
}

/// `GuestMemory.zero` over a large range (a kernel's BSS): exactly the range reads zero, its partial first
/// and last pages included, the bytes around it keep their values, and the whole pages in between are given
/// back to the host rather than written (no longer resident).
@Suite struct GuestMemoryZeroTests {
    @Test func aLargeUnalignedRangeReadsZeroAndOnlyItDoes() throws {
        let size = 0x40000
        let memory = try GuestMemory(layout: [(GuestAddress(0), UInt64(size))])
        try memory.write(bytes: [UInt8](repeating: 0x5A, count: size), at: GuestAddress(0))
        let start = 0x1234, count = 0x30000 + 0x567
        #expect(count >= GuestMemory.zeroByDroppingPagesFrom)
        try memory.zero(at: GuestAddress(UInt64(start)), count: count)
        let all = try memory.readBytes(at: GuestAddress(0), count: size)
        #expect(all[..<start].allSatisfy { $0 == 0x5A })
        #expect(all[start..<(start + count)].allSatisfy { $0 == 0 })
        #expect(all[(start + count)...].allSatisfy { $0 == 0x5A })
    }

    @Test func theWholePagesInsideAreNotResidentAfterwards() throws {
        let size = 0x40000
        let memory = try GuestMemory(layout: [(GuestAddress(0), UInt64(size))])
        try memory.write(bytes: [UInt8](repeating: 1, count: size), at: GuestAddress(0))
        try memory.zero(at: GuestAddress(0x800), count: 0x20000)
        let base = try memory.hostPointer(GuestAddress(0), size)
        var resident = [UInt8](repeating: 0, count: size / 4096)
        #expect(mincore(base, size, &resident) == 0)
        #expect(resident[1..<0x20].allSatisfy { $0 & 1 == 0 }, "pages 1...0x1F were written, not dropped")
        #expect(resident[0] & 1 == 1 && resident[0x20] & 1 == 1)  // the partial pages at the ends
    }
}
