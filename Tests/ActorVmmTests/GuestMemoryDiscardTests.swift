@testable import ActorVmm
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
