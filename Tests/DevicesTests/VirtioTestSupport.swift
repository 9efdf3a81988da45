import ActorVmm
@testable import Devices
import EpollLoop
import Synchronization
import Testing

/// The driver side of one split virtqueue over in-memory guest RAM: builds descriptor chains, publishes them
/// on the available ring, and reads the used ring — what a guest driver does, so devices can be tested
/// without KVM. Addresses: descriptor table at `base`, available ring at base + 0x1000, used ring at
/// base + 0x2000, data from base + 0x3000 upwards.
struct MockQueue {
    let memory: GuestMemory
    let size: UInt16
    let base: UInt64
    var nextDescriptor: UInt16 = 0
    var availIndex: UInt16 = 0
    var lastUsed: UInt16 = 0
    var dataCursor: UInt64

    var table: GuestAddress { GuestAddress(base) }
    var avail: GuestAddress { GuestAddress(base + 0x1000) }
    var used: GuestAddress { GuestAddress(base + 0x2000) }

    init(memory: GuestMemory, size: UInt16 = 16, base: UInt64 = 0x10000) {
        self.memory = memory
        self.size = size
        self.base = base
        dataCursor = base + 0x3000
        try! memory.zero(at: GuestAddress(base), count: 0x3000)  // fresh rings, as a driver allocates them
    }

    /// A SplitQueue configured the way the transport would after the driver's writes.
    func deviceQueue(eventIndex: Bool = false, indirect: Bool = true) -> SplitQueue {
        var q = SplitQueue()
        q.size = size
        q.descriptorTable = table
        q.availableRing = avail
        q.usedRing = used
        q.eventIndex = eventIndex
        q.indirectDescriptors = indirect
        q.ready = true
        return q
    }

    /// Allocates `length` bytes of data space, filled with `bytes` if given.
    mutating func allocate(_ length: Int, bytes: [UInt8]? = nil) -> GuestAddress {
        let address = GuestAddress(dataCursor)
        dataCursor += UInt64((length + 15) & ~15)
        if let bytes { try! memory.write(bytes: bytes, at: address) }
        return address
    }

    /// Writes descriptor `index` raw.
    func writeDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16, table: GuestAddress? = nil) {
        let at = GuestAddress((table ?? self.table).rawValue + UInt64(index) * 16)
        try! memory.write(address, at: at)
        try! memory.write(length, at: GuestAddress(at.rawValue + 8))
        try! memory.write(flags, at: GuestAddress(at.rawValue + 12))
        try! memory.write(next, at: GuestAddress(at.rawValue + 14))
    }

    /// Builds a chain of (buffer, writable) pairs and publishes it; returns the head index.
    @discardableResult
    mutating func post(_ buffers: [(GuestAddress, UInt32, writable: Bool)]) -> UInt16 {
        let head = nextDescriptor
        for (i, buffer) in buffers.enumerated() {
            let index = (head + UInt16(i)) % size
            let last = i == buffers.count - 1
            writeDescriptor(index, address: buffer.0.rawValue, length: buffer.1,
                            flags: (last ? 0 : 1) | (buffer.writable ? 2 : 0), next: (index + 1) % size)
        }
        nextDescriptor = (head + UInt16(buffers.count)) % size
        publish(head: head)
        return head
    }

    /// Puts `head` on the available ring and bumps the index.
    mutating func publish(head: UInt16) {
        try! memory.write(head, at: GuestAddress(avail.rawValue + 4 + 2 * UInt64(availIndex % size)))
        availIndex &+= 1
        try! memory.write(availIndex, at: GuestAddress(avail.rawValue + 2))
    }

    /// Used-ring entries the device returned since the last call: (head, written length).
    mutating func takeUsed() -> [(head: UInt32, length: UInt32)] {
        let index: UInt16 = try! memory.read(at: GuestAddress(used.rawValue + 2))
        var entries: [(UInt32, UInt32)] = []
        while lastUsed != index {
            let at = GuestAddress(used.rawValue + 4 + 8 * UInt64(lastUsed % size))
            entries.append((try! memory.read(at: at), try! memory.read(at: GuestAddress(at.rawValue + 4))))
            lastUsed &+= 1
        }
        return entries
    }
}

/// An MSI controller that records routes; its vectors count triggers.
final class FakeMsi: MsiController {
    final class Vector: MsiTarget {
        let gsi: UInt32
        let count = Atomic<Int>(0)
        init(gsi: UInt32) { self.gsi = gsi }
        func trigger() { count.add(1, ordering: .relaxed) }
    }
    let routes = Mutex<[UInt32: (address: UInt64, data: UInt32)]>([:])
    let allocated = Mutex<[Vector]>([])

    func allocate(count: Int) throws(KvmError) -> [any MsiTarget] {
        allocated.withLock { all in
            let new = (0..<count).map { Vector(gsi: UInt32(100 + all.count + $0)) }
            all += new
            return new
        }
    }

    func route(_ vector: any MsiTarget, message: (address: UInt64, data: UInt32)?) {
        routes.withLock { $0[vector.gsi] = message }
    }

    func triggers(_ index: Int) -> Int { allocated.withLock { $0[index].count.load(ordering: .relaxed) } }
}

/// Drives a ``VirtioPciDevice`` through BAR0 and configuration space exactly as a guest driver does
/// (virtio 1.2 §3.1.1 initialisation), from a test: no KVM, no vCPU.
struct VirtioDriver {
    let device: VirtioPciDevice
    let memory: GuestMemory
    let msi: FakeMsi
    var queues: [MockQueue] = []

    static let common: UInt64 = 0x0, notify: UInt64 = 0x3000, msixTable: UInt64 = 0x4000

    init(device: VirtioPciDevice, memory: GuestMemory, msi: FakeMsi) {
        self.device = device
        self.memory = memory
        self.msi = msi
    }

    func r(_ offset: UInt64, _ width: Int) async -> UInt64 { await device.read(offset: offset, width: width) }
    func w(_ offset: UInt64, _ width: Int, _ value: UInt64) async { await device.write(offset: offset, width: width, value: value) }

    /// Enables decoding and MSI-X, negotiates `features` (plus VERSION_1), sets up every queue with vector
    /// q+1 (vector 0 for configuration), and sets DRIVER_OK. Returns the final status byte.
    @discardableResult
    mutating func initialize(features extra: UInt64 = 0, queueSize: UInt16 = 16, queueCount: Int) async -> UInt8 {
        await device.configWrite(offset: 0x04, width: 2, value: 0x6)  // memory decoding + bus master
        await device.configWrite(offset: 0x42, width: 2, value: 0x8000)  // MSI-X enable (cap at 0x40)
        for vector in 0...queueCount {
            let entry = Self.msixTable + UInt64(vector) * 16
            await w(entry, 4, 0xFEE0_0000)
            await w(entry + 8, 4, UInt64(0x40 + vector))
            await w(entry + 12, 4, 0)  // unmask
        }
        await w(Self.common + 0x14, 1, 0)
        await w(Self.common + 0x14, 1, 1)
        await w(Self.common + 0x14, 1, 3)
        await w(Self.common + 0x08, 4, 0)
        await w(Self.common + 0x0C, 4, extra & 0xFFFF_FFFF)
        await w(Self.common + 0x08, 4, 1)
        await w(Self.common + 0x0C, 4, (extra >> 32) | 1)  // VERSION_1
        await w(Self.common + 0x14, 1, 0xB)
        await w(Self.common + 0x10, 2, 0)
        for q in 0..<queueCount {
            let mock = MockQueue(memory: memory, size: queueSize, base: 0x100000 + UInt64(q) * 0x40000)
            await w(Self.common + 0x16, 2, UInt64(q))
            await w(Self.common + 0x18, 2, UInt64(queueSize))
            await w(Self.common + 0x1A, 2, UInt64(q + 1))
            await w(Self.common + 0x20, 8, mock.table.rawValue)
            await w(Self.common + 0x28, 8, mock.avail.rawValue)
            await w(Self.common + 0x30, 8, mock.used.rawValue)
            await w(Self.common + 0x1C, 2, 1)
            queues.append(mock)
        }
        await w(Self.common + 0x14, 1, 0xF)
        return UInt8(await r(Self.common + 0x14, 1))
    }

    /// Notifies queue `q` the way a doorbell arrives in a real VM: the loop sees the ioeventfd fire and
    /// runs the queue inside the device actor (a write to BAR0's notify area only signals that eventfd).
    func kick(_ q: Int) async { await device.queueNotified(q) }

    /// The used entries of queue `q` once there are at least `count` (a device may complete on its loop
    /// later: block I/O through io_uring); what there is after 5 s otherwise.
    mutating func awaitUsed(queue q: Int, count: Int = 1) async -> [(head: UInt32, length: UInt32)] {
        var used = queues[q].takeUsed()
        let deadline = ContinuousClock.now + .seconds(5)
        while used.count < count && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(1))
            used += queues[q].takeUsed()
        }
        return used
    }
}

/// Guest RAM for device tests: 16 MiB at 0 unless told.
func testMemory(mebibytes: UInt64 = 16) -> GuestMemory { try! GuestMemory(layout: [(GuestAddress(0), mebibytes << 20)]) }

/// Builds a device on a fresh loop with fake MSI.
func makeDevice(_ backend: sending any VirtioDeviceModel, memory: GuestMemory, loop: EventLoop) throws -> (VirtioPciDevice, FakeMsi) {
    let msi = FakeMsi()
    let vectors = try msi.allocate(count: backend.queueCount + 1)
    let device = try VirtioPciDevice(name: "test", loop: loop, memory: memory, backend: backend,
                                     barAddress: 0xC000_0000, vectors: vectors, msiController: msi)
    return (device, msi)
}
