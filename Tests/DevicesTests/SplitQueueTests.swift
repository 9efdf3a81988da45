import ActorVmm
@testable import Devices
import Testing

@Suite struct SplitQueueTests {
    @Test func popsChainsInOrderAndSplitsReadableFromWritable() throws {
        let memory = testMemory()
        var driver = MockQueue(memory: memory)
        var queue = driver.deviceQueue()
        try queue.validate(memory: memory)
        let header = driver.allocate(16, bytes: Array(0..<16))
        let data = driver.allocate(512)
        let status = driver.allocate(1)
        let head = driver.post([(header, 16, false), (data, 512, true), (status, 1, true)])
        let chain = try popRequired(&queue, memory)
        let chainHead = chain.head, readable = chain.readable, writableLengths = chain.writable.map { $0.length }
        let headerBytes = try chain.readBytes(count: 16, memory: memory)
        let fitted = try chain.writeBytes([9, 9, 9], offset: 511, memory: memory)
        #expect(chainHead == head)
        #expect(readable == [GuestBuffer(address: header, length: 16)])
        #expect(writableLengths == [512, 1])
        #expect(headerBytes == Array(0..<16))
        #expect(fitted == 2)
        try queue.complete(chain, written: 513, memory: memory)
        let emptyAfterwards = try queue.pop(memory: memory) == nil
        #expect(emptyAfterwards)
        #expect(driver.takeUsed().map { [$0.head, $0.length] } == [[UInt32(head), 513]])
        #expect(try memory.readBytes(at: status, count: 1) == [9])
    }

    @Test func indirectTablesAreFollowedOnce() throws {
        let memory = testMemory()
        var driver = MockQueue(memory: memory)
        var queue = driver.deviceQueue(indirect: true)
        let indirect = driver.allocate(32)
        let a = driver.allocate(8), b = driver.allocate(8)
        driver.writeDescriptor(0, address: a.rawValue, length: 8, flags: 1, next: 1, table: indirect)
        driver.writeDescriptor(1, address: b.rawValue, length: 8, flags: 2, next: 0, table: indirect)
        driver.writeDescriptor(0, address: indirect.rawValue, length: 32, flags: 4, next: 0)
        driver.publish(head: 0)
        let chain = try popRequired(&queue, memory)
        let counts = (chain.readable.count, chain.writable.count)
        #expect(counts == (1, 1))
        try queue.complete(chain, written: 8, memory: memory)
    }

    /// Hostile chains are rejected (with their head, to be returned unused) with a specific error and never
    /// touch memory outside RAM.
    @Test func hostileChainsAreRejected() throws {
        let memory = testMemory()
        func attempt(_ build: (inout MockQueue) -> Void, indirect: Bool = true) -> QueueError? {
            var driver = MockQueue(memory: memory)
            var queue = driver.deviceQueue(indirect: indirect)
            build(&driver)
            do {
                _ = try queue.pop(memory: memory)?.head
                return nil
            } catch .rejectedChain(let head, let reason) {
                // A malformed chain is consumed and named by its head, so the device can return it unused.
                #expect(head == 0 && queue.nextAvailable == 1)
                return reason
            } catch {
                return error
            }
        }
        // A loop: 0 → 1 → 0.
        #expect(attempt { d in
            d.writeDescriptor(0, address: 0x8000, length: 8, flags: 1, next: 1)
            d.writeDescriptor(1, address: 0x8000, length: 8, flags: 1, next: 0)
            d.publish(head: 0)
        } == .chainTooLong)
        // Head index past the queue: no request can be returned, the ring is broken.
        #expect(attempt { d in d.publish(head: 99) } == .headOutOfRange(99))
        #expect(QueueError.headOutOfRange(99).breaksTheRing)
        // `next` past the queue.
        #expect(attempt { d in
            d.writeDescriptor(0, address: 0x8000, length: 8, flags: 1, next: 40)
            d.publish(head: 0)
        } == .descriptorIndexOutOfRange(40))
        // A buffer outside RAM, and one whose length runs past the end of RAM.
        #expect(attempt { d in
            d.writeDescriptor(0, address: 0x1_0000_0000, length: 8, flags: 0, next: 0)
            d.publish(head: 0)
        } == .bufferOutsideMemory(GuestAddress(0x1_0000_0000), length: 8))
        #expect(attempt { d in
            d.writeDescriptor(0, address: (16 << 20) - 4, length: 0xFFFF_FFFF, flags: 0, next: 0)
            d.publish(head: 0)
        } == .bufferOutsideMemory(GuestAddress((16 << 20) - 4), length: 0xFFFF_FFFF))
        // Readable after writable.
        #expect(attempt { d in
            d.writeDescriptor(0, address: 0x8000, length: 8, flags: 3, next: 1)
            d.writeDescriptor(1, address: 0x8000, length: 8, flags: 0, next: 0)
            d.publish(head: 0)
        } == .readableAfterWritable)
        // Nested indirect, indirect with NEXT, bad indirect length, indirect not negotiated.
        #expect(attempt { d in
            let table = d.allocate(16)
            d.writeDescriptor(0, address: table.rawValue, length: 16, flags: 4, next: 0, table: table)
            d.writeDescriptor(0, address: table.rawValue, length: 16, flags: 4, next: 0)
            d.publish(head: 0)
        } == .invalidIndirect("an indirect table inside an indirect table"))
        #expect(attempt { d in
            d.writeDescriptor(0, address: 0x8000, length: 16, flags: 5, next: 1)
            d.publish(head: 0)
        } == .invalidIndirect("NEXT set on an indirect descriptor"))
        #expect(attempt { d in
            d.writeDescriptor(0, address: 0x8000, length: 10, flags: 4, next: 0)
            d.publish(head: 0)
        } == .invalidIndirect("table length 10 is not a non-zero multiple of 16"))
        #expect(attempt({ d in
            d.writeDescriptor(0, address: 0x8000, length: 16, flags: 4, next: 0)
            d.publish(head: 0)
        }, indirect: false) == .invalidIndirect("indirect descriptors were not negotiated"))
        // An indirect table that loops inside itself.
        #expect(attempt { d in
            let table = d.allocate(32)
            d.writeDescriptor(0, address: 0x8000, length: 8, flags: 1, next: 1, table: table)
            d.writeDescriptor(1, address: 0x8000, length: 8, flags: 1, next: 0, table: table)
            d.writeDescriptor(0, address: table.rawValue, length: 32, flags: 4, next: 0)
            d.publish(head: 0)
        } == .chainTooLong)
    }

    @Test func availIndexJumpBreaksTheRing() throws {
        let memory = testMemory()
        let driver = MockQueue(memory: memory)
        var queue = driver.deviceQueue()
        try memory.write(UInt16(100), at: GuestAddress(driver.avail.rawValue + 2))
        #expect(throws: QueueError.availIndexJump(from: 0, to: 100)) { _ = try queue.pop(memory: memory)?.head }
        #expect(QueueError.availIndexJump(from: 0, to: 100).breaksTheRing)
        #expect(!QueueError.chainTooLong.breaksTheRing)
    }

    @Test func validationChecksSizeAlignmentAndRange() {
        let memory = testMemory()
        let driver = MockQueue(memory: memory)
        var q = driver.deviceQueue()
        q.size = 12
        #expect(throws: QueueError.self) { try q.validate(memory: memory) }
        q = driver.deviceQueue()
        q.usedRing = GuestAddress(driver.used.rawValue + 2)
        #expect(throws: QueueError.self) { try q.validate(memory: memory) }
        q = driver.deviceQueue()
        q.descriptorTable = GuestAddress((16 << 20) - 64)
        #expect(throws: QueueError.self) { try q.validate(memory: memory) }
    }

    @Test func eventIndexSuppressesInterruptsUntilUsedEventIsCrossed() throws {
        let memory = testMemory()
        var driver = MockQueue(memory: memory)
        var queue = driver.deviceQueue(eventIndex: true)
        // The driver asks for an interrupt only after the 3rd used entry (used_event = 2).
        try memory.write(UInt16(2), at: GuestAddress(driver.avail.rawValue + 4 + 2 * 16))
        var interrupts: [Bool] = []
        for _ in 0..<4 {
            driver.post([(driver.allocate(8), 8, true)])
            let chain = try popRequired(&queue, memory)
            try queue.complete(chain, written: 8, memory: memory)
            interrupts.append(queue.needsInterrupt(memory: memory))
        }
        #expect(interrupts == [true, false, true, false])
        // The device publishes avail_event so the driver knows when to notify.
        queue.requestNotification(memory: memory)
        #expect(try memory.read(UInt16.self, at: GuestAddress(driver.used.rawValue + 4 + 8 * 16)) == 4)
    }

    @Test func noInterruptFlagIsHonouredWithoutEventIndex() throws {
        let memory = testMemory()
        var driver = MockQueue(memory: memory)
        var queue = driver.deviceQueue()
        try memory.write(UInt16(1), at: driver.avail)  // VIRTQ_AVAIL_F_NO_INTERRUPT
        driver.post([(driver.allocate(8), 8, true)])
        let chain = try popRequired(&queue, memory)
        try queue.complete(chain, written: 8, memory: memory)
        let wants = queue.needsInterrupt(memory: memory)
        #expect(!wants)
    }
}

struct EmptyQueue: Error {}

/// Pops a request or fails the test (`#require` does not take non-copyable values).
func popRequired(_ queue: inout SplitQueue, _ memory: GuestMemory) throws -> DescriptorChain {
    guard let chain = try queue.pop(memory: memory) else { throw EmptyQueue() }
    return chain
}
