// One virtio device on PCI in a benchmark VM, wired as actor-vmm wires its devices (Sources/Cli/Machine.swift):
// host bridge at 00:00.0, the device at 00:01.0 with BAR0 at 0xC0000000, MMCONFIG windows at 0xE8000000,
// mechanism #1 ports, MSI-X vectors through a GsiRouter (KVM_SET_GSI_ROUTING + irqfd), doorbells as
// KVM_IOEVENTFD. Plus what only the benchmark needs: the null backend of row 2, and the grouping of a
// device's recorded events into doorbells.
import ActorVmm
import CKvm
import Devices
import EpollLoop

struct VirtioRig {
    static let mmconfigBase: UInt64 = 0xE800_0000
    static let barAddress: UInt64 = 0xC000_0000

    let device: VirtioPciDevice
    let buses: IoBuses
    /// Kept for the VM's lifetime: it owns the vectors' irqfds.
    let router: GsiRouter

    /// Builds the device on `loop` and registers its doorbells with `vm`. The caller then attaches a
    /// recorder and calls `watchDoorbells()` before the vCPUs start.
    init(vm: Vm, memory: GuestMemory, loop: EventLoop, name: String, backend: sending any VirtioBackend) throws {
        router = GsiRouter(vm: vm)
        let queueCount = backend.queueCount
        let vectors = try router.allocate(count: queueCount + 1)
        device = try VirtioPciDevice(name: name, loop: loop, memory: memory, backend: backend,
                                     barAddress: Self.barAddress, vectors: vectors, msiController: router)
        let anyLength = vm.kvm.checkExtension(KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0
        for queue in 0..<queueCount {
            let fd = device.notifyFDs[queue], address = device.notifyAddress(queue: queue)
            // As Machine.registerDoorbell: any width, or one ioeventfd per width drivers use.
            for length: UInt32 in anyLength ? [0] : [2, 4] {
                try vm.registerIoeventfd(eventFD: fd, address: address, length: length)
            }
        }
        var functions = [BusTarget?](repeating: nil, count: 32)
        var mmio = Bus()
        for (slot, function) in [(0, PciHostBridge(loop: loop) as any PciDevice), (1, device)] {
            let window = BusTarget.device(PciConfigWindow(device: function))
            functions[slot] = window
            mmio = try mmio.inserting(name: "mmconfig 00:\(slot).0", base: Self.mmconfigBase + UInt64(slot) << 15,
                                      size: 0x1000, window)
        }
        mmio = try mmio.inserting(name: "\(name) BAR0", base: Self.barAddress, size: VirtioPciDevice.barSize, .device(device))
        let pio = try Bus().inserting(name: "pci config ports", base: PciConfigPorts.port, size: PciConfigPorts.size,
                                      .router(PciConfigPorts(functions: functions)))
        buses = IoBuses(pio: pio, mmio: mmio)
    }
}

/// Row 2's device: a virtio device that does nothing but give each request back (0 bytes written) and
/// interrupt, so the row times the transport — doorbell, loop, actor, virtqueue, irqfd — and no I/O. It
/// presents itself as an entropy device (virtio id 4), so the guest's ordinary driver finds it (the guest's
/// `bench-notify` also runs against the real `--rng` of actor-vmm). Benchmark-only: not in actor-vmm.
final class NullBackend: VirtioBackend {
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
