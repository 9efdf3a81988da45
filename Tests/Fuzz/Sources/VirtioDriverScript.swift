import ActorVmm
@testable import Devices
import Glibc

/// 1 MiB of guest RAM for the virtio targets: queue q's rings at 0x10000 × (q + 1) (table, +0x1000 available,
/// +0x2000 used), indirect tables from 0x40000, request buffers in 0x50000..<0xF0000.
let virtioMemory = guardedMemory([(GuestAddress(0), 0x100000)])

/// The host side a script can feed: bytes written to `peer` become device input (a TAP frame, console
/// input) once the backend's host event runs. -1: the device has no host input.
struct HostInput: Sendable {
    var peer: Int32 = -1
    /// The device's end of the same pair, drained after each input so nothing carries over to the next.
    var deviceEnd: Int32 = -1
    /// Datagram (one write per frame) or stream.
    var datagrams = false
}

/// The driver side of a fuzzed virtio device: its view of each queue, to build chains and check the used ring.
struct DriverQueue {
    let index: Int
    var size: UInt16 = 0
    var nextDescriptor: UInt16 = 0
    var availIndex: UInt16 = 0
    var lastUsed: UInt16 = 0
    /// Writable bytes and descriptor slots of each chain posted whole and not yet returned, by head (nil
    /// after raw tampering: the used ring is then no longer checked against it).
    var posted: [UInt16: (writable: Int, slots: [UInt16])]? = [:]

    var base: UInt64 { 0x10000 * UInt64(index + 1) }
    var table: UInt64 { base }
    var avail: UInt64 { base + 0x1000 }
    var used: UInt64 { base + 0x2000 }
}

extension VirtioPciDevice {
    /// Runs a fuzz script as a guest driver would, through BAR0 and configuration space, under the
    /// device's isolation: a first byte chooses features and queue sizes and the device is initialised as
    /// Linux does (virtio 1.2 §3.1.1); every following operation (a byte, then its operands) posts a chain
    /// built from the input, rewrites descriptors or ring entries raw, rings a doorbell, reads or writes any
    /// register, feeds host input, or resets the device. Invariants checked after each step: reads return
    /// no more than their width; each used entry names a head the driver posted, with a length no larger
    /// than that chain's writable bytes; the used index never runs ahead of what was published.
    func runFuzzScript(_ bytes: [UInt8], host: HostInput) {
        var input = FuzzInput(bytes)
        let memory = self.memory
        try! memory.zero(at: GuestAddress(0), count: 0x100000)
        var queues = (0..<queues.count).map { DriverQueue(index: $0) }
        var dataCursor: UInt64 = 0x50000
        func allocate(_ length: Int) -> UInt64 {
            let rounded = UInt64((length + 15) & ~15)
            if dataCursor + rounded > 0xF0000 { dataCursor = 0x50000 }
            defer { dataCursor += rounded }
            return dataCursor
        }
        func checkRead(_ value: UInt64, _ width: Int, _ what: String) {
            guard value <= widthMask(width) else { finding("\(what) read of width \(width) returned \(value)") }
        }
        func initialize(_ setup: UInt8, _ sizes: UInt8) {
            configWrite(offset: 0x04, width: 2, value: setup & 0x80 != 0 ? 0x2 : 0x6)
            if setup & 0x40 == 0 {
                configWrite(offset: 0x42, width: 2, value: 0x8000)  // MSI-X enable
                for vector in 0...queues.count {
                    let entry = 0x4000 + UInt64(vector) * 16
                    write(offset: entry, width: 4, value: 0xFEE0_0000)
                    write(offset: entry + 8, width: 4, value: UInt64(0x40 + vector))
                    write(offset: entry + 12, width: 4, value: 0)
                }
            }
            write(offset: 0x14, width: 1, value: 0)
            write(offset: 0x14, width: 1, value: 1)
            write(offset: 0x14, width: 1, value: 3)
            let features = (setup & 1 != 0 ? VirtioFeature.ringIndirectDescriptors : 0)
                | (setup & 2 != 0 ? VirtioFeature.ringEventIndex : 0) | VirtioFeature.version1
                | (setup & 4 != 0 ? offeredFeatures & 0xFFFF_FFFF : 0)
            write(offset: 0x08, width: 4, value: 0)
            write(offset: 0x0C, width: 4, value: features & 0xFFFF_FFFF)
            write(offset: 0x08, width: 4, value: 1)
            write(offset: 0x0C, width: 4, value: features >> 32)
            write(offset: 0x14, width: 1, value: 0xB)
            write(offset: 0x10, width: 2, value: 0)
            for q in queues.indices {
                queues[q] = DriverQueue(index: q)
                queues[q].size = UInt16(1) << UInt16((sizes >> (2 * UInt8(q % 4))) & 3 + 2)  // 4...32
                try! memory.zero(at: GuestAddress(queues[q].base), count: 0x3000)
                write(offset: 0x16, width: 2, value: UInt64(q))
                write(offset: 0x18, width: 2, value: UInt64(queues[q].size))
                write(offset: 0x1A, width: 2, value: UInt64(q + 1))
                write(offset: 0x20, width: 8, value: queues[q].table)
                write(offset: 0x28, width: 8, value: queues[q].avail)
                write(offset: 0x30, width: 8, value: queues[q].used)
                write(offset: 0x1C, width: 2, value: 1)
            }
            write(offset: 0x14, width: 1, value: 0xF)
        }
        func publish(_ q: Int, head: UInt16) {
            let size = UInt64(queues[q].size)
            try! memory.write(head, at: GuestAddress(queues[q].avail + 4 + 2 * (UInt64(queues[q].availIndex) % size)))
            queues[q].availIndex &+= 1
            try! memory.write(queues[q].availIndex, at: GuestAddress(queues[q].avail + 2))
        }
        func checkUsed(_ q: Int) {
            let size = queues[q].size
            let usedIndex: UInt16 = try! memory.read(at: GuestAddress(queues[q].used + 2))
            let returned = usedIndex &- queues[q].lastUsed
            // The device may complete at most what was ever published (only checked while untampered).
            if queues[q].posted != nil, returned > size {
                finding("queue \(q): used index jumped by \(returned) in a queue of \(size)")
            }
            while queues[q].lastUsed != usedIndex, returned <= size {
                let entry = queues[q].used + 4 + 8 * UInt64(queues[q].lastUsed % size)
                let head: UInt32 = try! memory.read(at: GuestAddress(entry))
                let length: UInt32 = try! memory.read(at: GuestAddress(entry + 4))
                if let posted = queues[q].posted {
                    guard head < UInt32(size), let writable = posted[UInt16(head)]?.writable else {
                        finding("queue \(q): used entry names head \(head), which the driver did not post")
                    }
                    guard Int(length) <= writable else {
                        finding("queue \(q): used length \(length) for a chain with \(writable) writable bytes")
                    }
                    queues[q].posted?[UInt16(head)] = nil
                }
                queues[q].lastUsed &+= 1
            }
        }

        initialize(input.byte(), input.byte())
        var steps = 0
        while !input.isEmpty, steps < 64 {
            steps += 1
            let op = input.byte()
            let q = queues.isEmpty ? 0 : Int(op >> 4) % queues.count
            switch op & 0xF {
            case 0, 1, 2:  // post a chain of 1...4 buffers (indirect when bit 3 of the count byte is set)
                guard !queues.isEmpty else { break }
                let shape = input.byte()
                let count = Int(shape & 3) + 1
                var descriptors: [(address: UInt64, length: UInt32, writable: Bool)] = []
                for _ in 0..<count {
                    let lengthByte = input.integer(UInt16.self)
                    let writable = lengthByte & 0x8000 != 0
                    let length = Int(lengthByte & 0x7FFF) % (shape & 0x80 != 0 ? 0x8000 : 0x400)
                    let address = allocate(length)
                    if !writable { try! memory.write(bytes: input.take(length), at: GuestAddress(address)) }
                    descriptors.append((address, UInt32(length), writable))
                }
                let size = queues[q].size
                let head = queues[q].nextDescriptor
                let indirect = shape & 8 != 0
                let tableAddress = indirect ? 0x40000 + UInt64(q) * 0x4000 + UInt64(head) * 0x100 : queues[q].table
                for (i, d) in descriptors.enumerated() {
                    let index = indirect ? UInt16(i) : (head &+ UInt16(i)) % size
                    let next = indirect ? UInt16(i + 1) : (index &+ 1) % size
                    let at = tableAddress + UInt64(index) * 16
                    try! memory.write(d.address, at: GuestAddress(at))
                    try! memory.write(d.length, at: GuestAddress(at + 8))
                    try! memory.write(UInt16((i < count - 1 ? 1 : 0) | (d.writable ? 2 : 0)), at: GuestAddress(at + 12))
                    try! memory.write(next, at: GuestAddress(at + 14))
                }
                if indirect {
                    let at = queues[q].table + UInt64(head) * 16
                    try! memory.write(tableAddress, at: GuestAddress(at))
                    try! memory.write(UInt32(count * 16), at: GuestAddress(at + 8))
                    try! memory.write(UInt16(4), at: GuestAddress(at + 12))
                }
                let used = indirect ? 1 : count
                // A chain that does not fit beside the outstanding ones overwrites their descriptors: from
                // then on the driver is no longer well-formed.
                let slots = (0..<UInt16(used)).map { (head &+ $0) % size }
                let occupied = Set(queues[q].posted?.values.flatMap(\.slots) ?? [])
                if used <= Int(size), occupied.isDisjoint(with: slots) {
                    queues[q].posted?[head] = (descriptors.filter(\.writable).reduce(0) { $0 + Int($1.length) }, slots)
                } else {
                    queues[q].posted = nil
                }
                queues[q].nextDescriptor = (head &+ UInt16(used)) % size
                publish(q, head: head)
                if shape & 0x40 != 0 { write(offset: 0x3000 + UInt64(q) * 4, width: 2, value: UInt64(q)) }
            case 3:  // doorbell through BAR0, any width
                write(offset: 0x3000 + UInt64(q) * 4, width: input.width(), value: UInt64(q))
            case 4:  // a raw descriptor
                guard !queues.isEmpty else { break }
                let index = UInt64(input.byte()) % UInt64(queues[q].size)
                let at = GuestAddress(queues[q].table + index * 16)
                let raw = input.integer(UInt64.self)
                try! memory.write(raw & (1 << 63) != 0 ? raw : raw % 0x101000, at: at)
                try! memory.write(input.integer(UInt32.self), at: GuestAddress(at.rawValue + 8))
                try! memory.write(input.integer(UInt16.self), at: GuestAddress(at.rawValue + 12))
                try! memory.write(input.integer(UInt16.self), at: GuestAddress(at.rawValue + 14))
                queues[q].posted = nil
            case 5:  // raw head on the available ring, or a raw available index
                guard !queues.isEmpty else { break }
                let value = input.integer(UInt16.self)
                if input.bool() {
                    publish(q, head: value)
                } else {
                    queues[q].availIndex = value
                    try! memory.write(value, at: GuestAddress(queues[q].avail + 2))
                }
                queues[q].posted = nil
            case 6:  // any BAR0 write
                write(offset: UInt64(input.integer(UInt16.self) % 0x6000), width: input.width(), value: input.integer())
                queues.indices.forEach { queues[$0].posted = nil }
            case 7:  // any BAR0 read
                let offset = UInt64(input.integer(UInt16.self) % 0x6000), width = input.width()
                checkRead(read(offset: offset, width: width), width, "BAR0 \(offset)")
            case 8:  // configuration space write
                configWrite(offset: UInt64(input.integer(UInt16.self) % 0x1000), width: input.width(), value: input.integer())
                queues.indices.forEach { queues[$0].posted = nil }
            case 9:  // configuration space read
                let offset = UInt64(input.integer(UInt16.self) % 0x1000), width = input.width()
                checkRead(configRead(offset: offset, width: width), width, "config \(offset)")
            case 10:  // host input: a frame or console bytes, then the host event
                guard host.peer >= 0 else { break }
                let data = input.take(Int(input.integer(UInt16.self) % (host.datagrams ? 2048 : 512)))
                _ = data.withUnsafeBytes { Glibc.write(host.peer, $0.baseAddress, $0.count) }
                backend.hostEvent(0, device: self)
            case 11:  // avail flags / used_event
                guard !queues.isEmpty else { break }
                let value = input.integer(UInt16.self)
                let at = input.bool() ? queues[q].avail : queues[q].avail + 4 + 2 * UInt64(queues[q].size)
                try! memory.write(value, at: GuestAddress(at))
            case 12:  // reset and initialise again
                write(offset: 0x14, width: 1, value: 0)
                checkRead(read(offset: 0x14, width: 1), 1, "status")
                initialize(input.byte(), input.byte())
                continue
            default:  // notify without a doorbell (what the loop does for an ioeventfd)
                queueNotified(q)
            }
            queues.indices.forEach(checkUsed)
        }
        // Reset (memory decoding on, so the write lands): the backend stops watching host descriptors.
        configWrite(offset: 0x04, width: 2, value: 0x6)
        write(offset: 0x14, width: 1, value: 0)
        // Drain both ends: what the device sent to the host, and host input the device did not take.
        var sink = [UInt8](repeating: 0, count: 65536)
        for fd in [host.peer, host.deviceEnd] where fd >= 0 {
            while sink.withUnsafeMutableBytes({ Glibc.read(fd, $0.baseAddress, $0.count) }) > 0 {}
        }
    }
}
