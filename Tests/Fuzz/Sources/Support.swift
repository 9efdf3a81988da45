import ActorVmm
import Dispatch
import EpollLoop
import Glibc
import Synchronization

/// Guest RAM for the device and loader targets, with an inaccessible guard page mapped directly before and
/// after each region when the address space there is free: a host access that escaped the bounds checks of
/// ``GuestMemory`` would fault (and be reported) instead of silently touching a neighbouring mapping.
func guardedMemory(_ layout: [(start: GuestAddress, size: UInt64)]) -> GuestMemory {
    let memory = try! GuestMemory(layout: layout)
    let page = 4096
    for region in memory.regions {
        let host = Int(region.hostAddress)
        for at in [host - page, host + Int(region.size)] {
            // MAP_FIXED_NOREPLACE: never replaces an existing mapping; if the address is taken, no guard.
            _ = mmap(UnsafeMutableRawPointer(bitPattern: at), page, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | 0x100000, -1, 0)
        }
    }
    return memory
}

/// The loop every device target's actors run on (created once per process).
let fuzzLoop: EventLoop = try! EventLoop(name: "fuzz")

/// Runs `body` on `loop`'s thread, where the loop's actors may be entered with `assumeIsolated`, and waits.
func runOnLoop(_ loop: EventLoop, _ body: @escaping @Sendable () -> Void) {
    let done = DispatchSemaphore(value: 0)
    loop.execute {
        body()
        done.signal()
    }
    done.wait()
}

/// An MSI vector that does nothing when triggered (Cloud Hypervisor's NoopVirtioInterrupt).
final class NoopVector: MsiTarget {
    let gsi: UInt32
    init(gsi: UInt32) { self.gsi = gsi }
    func trigger() {}
}

/// An MSI controller that hands out no-op vectors and ignores routes.
final class NoopMsiController: MsiController {
    func allocate(count: Int) throws(KvmError) -> [any MsiTarget] { (0..<count).map { NoopVector(gsi: UInt32($0)) } }
    func route(_ vector: any MsiTarget, message: (address: UInt64, data: UInt32)?) {}
}

/// A power control that counts stop requests.
final class CountingPower: PowerControl {
    let stops = Atomic<Int>(0)
    func requestStop(_ reason: VmStopReason) { stops.add(1, ordering: .relaxed) }
}
