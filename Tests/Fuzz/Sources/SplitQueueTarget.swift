import ActorVmm
@testable import Devices

/// 256 KiB of guest RAM for the queue target: rings at 0x1000/0x3000/0x4000, buffers anywhere.
let queueMemory = guardedMemory([(GuestAddress(0), 0x40000)])

/// The split virtqueue on its own: the input is the queue's configuration, then a raw image of the
/// descriptor table and the available ring (what a hostile driver controls), then buffer contents. The
/// device side pops until the ring is empty or broken, copies from and into every chain, and completes it.
/// Invariants: every buffer of a returned chain lies in guest RAM, readable ones first; a chain never has
/// more descriptors than the table allows; copies stay within the chain's lengths; the used index moves by
/// exactly the number of completed chains.
func splitQueueTarget(_ bytes: [UInt8]) {
    var input = FuzzInput(bytes)
    let memory = queueMemory
    try! memory.zero(at: GuestAddress(0), count: 0x40000)
    var queue = SplitQueue()
    let flags = input.byte()
    queue.size = UInt16(1) << UInt16(input.byte() % 9)  // 1...256
    if flags & 0x80 != 0 { queue.size = input.integer() }  // any size: validate() must refuse the bad ones
    queue.eventIndex = flags & 1 != 0
    queue.indirectDescriptors = flags & 2 != 0
    queue.descriptorTable = GuestAddress(flags & 4 != 0 ? input.integer(UInt64.self) % 0x41000 : 0x1000)
    queue.availableRing = GuestAddress(0x3000)
    queue.usedRing = GuestAddress(0x4000)
    queue.ready = true
    guard (try? queue.validate(memory: memory)) != nil else { return }
    let size = Int(queue.size)
    // Descriptor table: addresses are folded into RAM (plus a little beyond) so chains are mostly valid.
    let table = queue.descriptorTable
    for index in 0..<size where !input.isEmpty {
        let raw = input.integer(UInt64.self)
        let address = raw & (1 << 63) != 0 ? raw : raw % 0x41000
        let length = input.integer(UInt32.self) % (input.bool() ? 0x2000 : UInt32.max)
        let descriptorFlags = input.integer(UInt16.self)
        let next = input.integer(UInt16.self) % UInt16(max(1, min(size * 2, 0xFFFF)))
        let at = GuestAddress(table.rawValue + UInt64(index) * 16)
        try? memory.write(address, at: at)
        try? memory.write(length, at: GuestAddress(at.rawValue + 8))
        try? memory.write(descriptorFlags, at: GuestAddress(at.rawValue + 12))
        try? memory.write(next, at: GuestAddress(at.rawValue + 14))
    }
    // Available ring: published index, then heads.
    let published = input.integer(UInt16.self) % UInt16(2 * size + 2)
    try! memory.write(input.integer(UInt16.self), at: GuestAddress(0x3000))
    try! memory.write(published, at: GuestAddress(0x3002))
    for slot in 0..<size where !input.isEmpty {
        try! memory.write(input.integer(UInt16.self) % UInt16(max(1, min(size * 2, 0xFFFF))),
                          at: GuestAddress(0x3004 + 2 * UInt64(slot)))
    }
    try! memory.write(input.integer(UInt16.self), at: GuestAddress(0x3004 + 2 * UInt64(size)))  // used_event
    // Buffer contents: the rest of the input, from 0x10000.
    try! memory.write(bytes: input.rest().prefix(0x30000).map { $0 }, at: GuestAddress(0x10000))

    var completed: UInt16 = 0
    // A writable buffer or a moved descriptor table over the used ring: the driver's own doing.
    let tableEnd = queue.descriptorTable.rawValue + 16 * UInt64(size)
    var usedRingOverwritten = queue.descriptorTable.rawValue < 0x5000 && tableEnd > 0x4000
    for _ in 0..<(2 * size + 2) {
        let chain: DescriptorChain
        do {
            guard let popped = try queue.pop(memory: memory) else { break }
            chain = popped
        } catch {
            if error.breaksTheRing { break }
            continue
        }
        guard Int(chain.head) < size else { finding("head \(chain.head) outside a queue of \(size)") }
        let maxDescriptors = queue.indirectDescriptors ? max(size, 0xFFFF) : size
        guard chain.readable.count + chain.writable.count <= maxDescriptors else {
            finding("a chain of \(chain.readable.count + chain.writable.count) descriptors in a queue of \(size)")
        }
        for buffer in chain.readable + chain.writable where !memory.contains(buffer.address, count: Int(buffer.length)) {
            finding("buffer \(buffer.address)+\(buffer.length) outside guest RAM")
        }
        let overUsedRing = chain.writable.contains {
            $0.address.rawValue < 0x5000 && $0.address.rawValue + UInt64($0.length) > 0x4000
        }
        if overUsedRing { usedRingOverwritten = true }
        let wanted = Int(min(chain.readableLength, 0x4000))
        if let read = try? chain.readBytes(offset: 0, count: wanted, memory: memory), read.count != wanted {
            finding("read \(read.count) of \(wanted) readable bytes")
        }
        let payload = [UInt8](repeating: 0xA5, count: min(chain.writableLength, 0x4000) + 3)
        if let written = try? chain.writeBytes(payload, offset: 1, memory: memory),
           written > max(0, chain.writableLength - 1) {
            finding("wrote \(written) bytes into \(chain.writableLength) writable bytes at offset 1")
        }
        let slices = chain.writableSlices(from: 3).reduce(0) { $0 + Int($1.length) }
        guard slices == max(0, chain.writableLength - 3) else { finding("writable slices after 3 bytes hold \(slices)") }
        do {
            try queue.complete(chain, written: UInt32(min(chain.writableLength, 0xFFFF)), memory: memory)
            completed &+= 1
        } catch {
            finding("completing into a validated used ring failed: \(error)")
        }
        _ = queue.needsInterrupt(memory: memory)
        queue.requestNotification(memory: memory)
    }
    let usedIndex: UInt16 = try! memory.read(at: GuestAddress(0x4002))
    guard usedRingOverwritten || usedIndex == completed else { finding("used index \(usedIndex) after \(completed) completions") }
}
