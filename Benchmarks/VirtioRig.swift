// What only the virtio benchmarks need (the device itself is attached by the control plane's device
// manager, as actor-vmm attaches its own): the null backend of row 2, and the grouping of a device's
// recorded events into doorbells.
import ActorVmm
import Devices

/// Row 2's device: a virtio device that does nothing but give each request back (0 bytes written) and
/// interrupt, so the row times the transport — doorbell, loop, actor, virtqueue, irqfd — and no I/O. It
/// presents itself as an entropy device (virtio id 4), so the guest's ordinary driver finds it (the guest's
/// `bench-notify` also runs against the real `--rng` of actor-vmm). Benchmark-only: not in actor-vmm.
final class NullBackend: VirtioDeviceModel {
    let deviceType = VirtioDeviceType.entropy
    let queueCount = 1
    let deviceFeatures: UInt64 = 0
    let configSize = 0

    func readConfig(offset: Int, width: Int) -> UInt64 { 0 }
    func activate(device: isolated VirtioPciDevice) throws(VirtioError) {}
    func reset(device: isolated VirtioPciDevice) {}

    func queueNotified(_ index: Int, device: isolated VirtioPciDevice) {
        device.drain(queue: index) { chain in
            device.complete(chain, queue: index, written: 0)
            return true
        }
    }
}

/// What a device did for one doorbell, in TSC ticks: the loop saw the doorbell, completed requests, sent the
/// interrupt.
struct DoorbellService: Equatable {
    var doorbell: UInt64
    var completions: [UInt64]
    var interrupt: UInt64
}

extension DoorbellService {
    /// Splits a device's recorded events into doorbells. Every doorbell must be followed by exactly
    /// `requests` completions and one interrupt before the next doorbell — the guest's contract (it waits
    /// for each interrupt) — or the recording does not show what the row claims and this throws.
    static func group(_ events: [VirtioEventRecorder.Event], requests: Int) throws(BenchError) -> [DoorbellService] {
        var services: [DoorbellService] = []
        var current: DoorbellService?
        for event in events {
            switch event.kind {
            case .doorbell:
                guard current == nil else { throw BenchError("a doorbell before the previous one's interrupt (\(services.count))") }
                current = DoorbellService(doorbell: event.tsc, completions: [], interrupt: 0)
            case .completed:
                guard current != nil else { throw BenchError("a completion without a doorbell (\(services.count))") }
                current?.completions.append(event.tsc)
            case .interrupt:
                guard var service = current else { throw BenchError("an interrupt without a doorbell (\(services.count))") }
                // Requests completed in several batches (block I/O through io_uring) interrupt once per batch:
                // the doorbell's service ends with the interrupt after its last completion.
                guard !service.completions.isEmpty, service.completions.count <= requests else {
                    throw BenchError("doorbell \(services.count): \(service.completions.count) completions, expected \(requests)")
                }
                guard service.completions.count == requests else { continue }
                service.interrupt = event.tsc
                services.append(service)
                current = nil
            }
        }
        if current != nil { throw BenchError("the last doorbell has no interrupt") }
        return services
    }
}
