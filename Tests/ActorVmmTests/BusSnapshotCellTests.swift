@testable import ActorVmm
import EpollLoop
import Glibc
import Synchronization
import Testing

/// A raw device that records whether it was accessed after it was marked detached.
private final class DetachableDevice: RawBusDevice {
    let detached = Atomic<Bool>(false)
    let accessesAfterDetach = Atomic<Int>(0)
    let accesses = Atomic<Int>(0)
    func read(offset: UInt64, width: Int) -> UInt64 {
        accesses.add(1, ordering: .relaxed)
        // Hold the "exit" open a little, as a real dispatch does, so a swap can land in the middle of it.
        for _ in 0..<50 { _ = accesses.load(ordering: .relaxed) }
        if detached.load(ordering: .acquiring) { accessesAfterDetach.add(1, ordering: .relaxed) }
        return 0
    }
    func write(offset: UInt64, width: Int, value: UInt64) {}
}

private func buses(_ devices: [DetachableDevice]) throws -> IoBuses {
    var bus = Bus()
    for (index, device) in devices.enumerated() {
        bus = try bus.inserting(name: "d\(index)", base: UInt64(index) * 0x1000, size: 0x1000, .raw(device))
    }
    return IoBuses(mmio: bus)
}

private final class Flag: Sendable {
    let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}

/// The vCPU side of a bus swap (docs/hotplug.md), without KVM: readers bracket an exit with enter/leave
/// and read the snapshot unretained; a writer publishes and waits for quiescence before a device goes.
@Suite struct BusSnapshotCellTests {
    @Test func aPublishedSnapshotIsSeenByTheNextExitAndOldOnesGoAfterQuiescence() throws {
        let a = DetachableDevice(), b = DetachableDevice()
        let cell = BusSnapshotCell(try buses([a]))
        #expect(cell.currentUnretained._withUnsafeGuaranteedRef { $0.generation } == 1)
        #expect(cell.publish(try buses([a, b])) == 2)
        #expect(cell.currentUnretained._withUnsafeGuaranteedRef { $0.buses.mmio.entries.count } == 2)
        #expect(cell.liveSnapshots == 2, "the replaced snapshot lives until quiescence")
        let reader = BusReader()
        reader.enter(); reader.leave()
        cell.waitForQuiescence(of: [reader])  // the reader is outside an exit: returns at once
        #expect(cell.liveSnapshots == 1)
    }

    @Test func quiescenceWaitsForAReaderInsideAnExit() throws {
        weak var weakOld: DetachableDevice?
        let cell: BusSnapshotCell
        do {
            let old = DetachableDevice()
            weakOld = old
            cell = BusSnapshotCell(try buses([old]))
        }
        let reader = BusReader()
        let entered = ThreadParker(), release = ThreadParker()
        let vcpu = TestThread {
            reader.enter()
            let count = cell.currentUnretained._withUnsafeGuaranteedRef { $0.buses.mmio.entries.count }
            entered.signal()
            release.wait()  // still "dispatching" on the old snapshot
            _ = count
            reader.leave()
        }
        entered.wait()
        cell.publish(IoBuses())
        let done = Flag()
        let writer = TestThread {
            cell.waitForQuiescence(of: [reader])
            done.set()
        }
        usleep(50_000)
        #expect(!done.isSet, "the reader is still inside its exit")
        #expect(weakOld != nil, "the old snapshot (and its device) is still alive")
        release.signal()
        writer.join(); vcpu.join()
        #expect(done.isSet)
        #expect(weakOld == nil, "released once no reader can use it")
        #expect(cell.liveSnapshots == 1)
    }

    /// Readers dispatch continuously while a writer removes devices one by one: after each quiescence the
    /// removed device is marked detached, and no reader may touch it afterwards.
    @Test func noExitReachesADeviceAfterItsRemovalCompleted() throws {
        let devices = (0..<24).map { _ in DetachableDevice() }
        let cell = BusSnapshotCell(try buses(devices))
        let readers = (0..<3).map { _ in BusReader() }
        let stop = Flag()
        let threads = readers.map { reader in
            TestThread {
                var index = 0
                while !stop.isSet {
                    reader.enter()
                    cell.currentUnretained._withUnsafeGuaranteedRef { snapshot in
                        let entries = snapshot.buses.mmio.entries
                        if !entries.isEmpty, case .raw(let device) = entries[index % entries.count].target {
                            _ = device.read(offset: 0, width: 4)
                        }
                    }
                    reader.leave()
                    index &+= 1
                }
            }
        }
        var remaining = devices
        while !remaining.isEmpty {
            usleep(500)
            let gone = remaining.removeFirst()
            cell.publish(try buses(remaining))
            cell.waitForQuiescence(of: readers)
            gone.detached.store(true, ordering: .releasing)
        }
        stop.set()
        for thread in threads { thread.join() }
        #expect(devices.map { $0.accessesAfterDetach.load(ordering: .relaxed) }.reduce(0, +) == 0)
        #expect(devices.map { $0.accesses.load(ordering: .relaxed) }.reduce(0, +) > 100, "the readers ran")
    }
}
