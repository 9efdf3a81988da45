import ActorVmm
import Devices
import EpollLoop

/// One queue worker to make (per-queue placement): the queues it serves, its loop, its backend.
public struct QueueWorkerPlan: Sendable {
    public let queues: [Int]
    public let loop: EventLoop
    public let makeBackend: @Sendable () -> any VirtioDeviceModel
}

/// `--event-loops`: which loop each virtio device — and with `per-queue` each of its queue groups — runs on
/// (docs/architecture.md "Placement"). Boot devices and hot-added ones go through here alike.
extension DeviceManager {
    /// Attaches `prepared` as `id`: on `sharedLoop` (`shared`), on a loop of its own named `vmm-<id>`
    /// (`per-device`), or (`per-queue`) on a loop of its own with a queue worker per virtio-blk queue or
    /// virtio-net queue pair, each on a loop `vmm-<id>-q<N>`; a device without queue groups (rng, console) gets
    /// a loop of its own. The loops made here are the device manager's: shut down when the device goes.
    nonisolated(nonsending) func attach(_ prepared: PreparedDevices.Virtio, id: String, placement: Placement,
                                        sharedLoop: EventLoop) async throws(DeviceManagerError) -> VirtioPciDevice {
        guard placement != .shared else {
            return try await attachVirtio(id: id, backend: prepared.makeBackend(), loop: sharedLoop)
        }
        let loop = try Self.makeLoop("vmm-\(id)")
        guard placement == .perQueue, let groups = prepared.queueGroups else {
            return try await attachVirtio(id: id, backend: prepared.makeBackend(loopOfItsOwn: true), loop: loop, ownedLoops: [loop])
        }
        var loops = [loop], plans: [QueueWorkerPlan] = []
        for (number, queues) in groups.enumerated() {
            let queueLoop: EventLoop
            do {
                queueLoop = try Self.makeLoop("vmm-\(id)-q\(number)")
            } catch {
                for loop in loops { loop.shutdown() }
                throw error
            }
            loops.append(queueLoop)
            plans.append(QueueWorkerPlan(queues: queues, loop: queueLoop, makeBackend: prepared.queueBackendMaker(number)))
        }
        return try await attachVirtio(id: id, backend: prepared.makeDeviceBackendForQueueWorkers(), loop: loop,
                                      workers: plans, ownedLoops: loops)
    }

    private static func makeLoop(_ name: String) throws(DeviceManagerError) -> EventLoop {
        do {
            return try EventLoop(name: name, onStart: Seccomp.threadStart(.device))
        } catch {
            throw .host("cannot start event loop \(name): \(error)")
        }
    }

    /// Makes the queue workers of `plans` for `device` and starts them watching their doorbells.
    nonisolated(nonsending) func makeWorkers(_ plans: [QueueWorkerPlan], for device: VirtioPciDevice,
                                             vectors: [any MsiTarget]) async throws(DeviceManagerError) {
        guard !plans.isEmpty else { return }
        var workers: [VirtioPciDevice] = []
        for (number, plan) in plans.enumerated() {
            do throws(Errno) {
                workers.append(try VirtioPciDevice(name: "\(device.name)-q\(number)", loop: plan.loop, memory: memory,
                                                   backend: plan.makeBackend(), barAddress: device.barAddress,
                                                   vectors: vectors, msiController: msiRouter,
                                                   coordinator: device, servedQueues: plan.queues))
            } catch {
                throw .host("cannot create queue worker \(number): \(error)")
            }
        }
        await device.adopt(workers: workers)
        for worker in workers {
            do throws(Errno) {
                try await worker.watchDoorbells()
            } catch {
                throw .host("cannot watch the doorbells of \(worker.name): \(error)")
            }
        }
    }
}

extension PreparedDevices.Virtio {
    /// The queues each queue worker serves: a virtio-blk queue each, a virtio-net queue pair each (receiveq
    /// 2N, transmitq 2N+1; the control queue stays with the device). Nil for devices without (rng, console).
    var queueGroups: [[Int]]? {
        switch opened {
        case .block(let o): (0..<o.queueCount).map { [$0] }
        case .net(let o): (0..<o.queuePairs).map { [2 * $0, 2 * $0 + 1] }
        case .rng, .console: nil
        }
    }

    /// The device's own backend when queue workers serve its queues.
    func makeDeviceBackendForQueueWorkers() -> any VirtioDeviceModel {
        switch opened {
        case .block(let o): VirtioBlock(o.forDeviceWithQueueWorkers)
        case .net(let o): VirtioNet(o, serving: .controlQueue)
        case .rng, .console: makeBackend()
        }
    }

    /// Makes the backend of queue worker `number`.
    func queueBackendMaker(_ number: Int) -> @Sendable () -> any VirtioDeviceModel {
        switch opened {
        case .block(let o): { VirtioBlock(o.onLoopOfItsOwn) }
        case .net(let o): { VirtioNet(o, serving: .pair(number)) }
        case .rng, .console: { makeBackend() }
        }
    }
}
