// One boot of the test guest against one virtio device (rows 2 and 3): the guest runs a `bench-*` check
// that rings the device's doorbell `warmup + count` times, and the device records what it did for each.
import ActorVmm
import Boot
import CAllocCount
import Devices
import EpollLoop

/// The device under test, made fresh for each run (backends are not Sendable: each belongs to its actor).
enum BenchBackend: Sendable {
    case null
    case block(VirtioBlock.Options)

    func make() throws -> any VirtioDeviceModel {
        switch self {
        case .null: NullBackend()
        case .block(let options): try VirtioBlock(options: options)
        }
    }
}

struct VirtioGuestRun {
    let guestPath: String
    /// The guest check (`bench-notify`, `bench-blk`) and its extra command-line parameters.
    let check: String
    let parameters: String
    /// The device; nil for a check that needs none (`bench-ipi`): then no doorbells are expected either.
    let backend: BenchBackend?
    let count: Int
    let warmup: Int
    let requestsPerDoorbell: Int
    let vcpuCPU: Int?
    let loopCPU: Int?
    /// Guest-physical address of the guest's per-doorbell cycle counts.
    let sampleBuffer: UInt64

    struct Output {
        /// The measured doorbells (the last `count`), host TSC ticks.
        var services: [DoorbellService]
        /// The guest's TSC just before each measured doorbell write, and at its interrupt handler.
        var guestStarts: [UInt64]
        var guestEnds: [UInt64]
        /// Guest TSC − host TSC, if KVM tells (to put guest and host stamps on one time line).
        var tscOffset: Int64?
        var counters: VirtioCounters
        /// malloc calls on the device loop's thread from the guest's start to its end (CAllocCount).
        var loopAllocations: UInt64

        /// The guest's cycles from doorbell to interrupt handler, per measured doorbell.
        var guestCycles: [UInt64] { zip(guestStarts, guestEnds).map { $1 &- $0 } }

        /// `guest` (a guest TSC reading) as host TSC ticks; nil without the offset.
        func hostTicks(_ guest: UInt64) -> UInt64? { tscOffset.map { guest &- UInt64(bitPattern: $0) } }
    }

    func run() async throws -> Output {
        let memory = try benchMemory(mebibytes: 128)
        let cmdline = "tests=\(check) bench_n=\(count) bench_warmup=\(warmup) bench_buf=\(hex(sampleBuffer))"
            + (parameters.isEmpty ? "" : " " + parameters)
        let boot = try KernelLoader.loadElfKernel(path: guestPath, cmdline: cmdline, memory: memory)
        let loop = try Loops.make("bench-virtio", cpu: loopCPU)
        defer { loop.shutdown() }
        var device: VirtioPciDevice?
        let vm = try await BenchVm(memory: memory, bootStates: [boot.bootState], strategy: .inlineIfIdle,
                                   threadOptions: [VcpuThreadOptions(cpu: vcpuCPU)]) { devices in
            guard let backend else { return }
            device = try await devices.attachVirtio(id: "bench0", backend: backend.make(), loop: loop)
        }
        let doorbells = count + warmup
        let recorder = VirtioEventRecorder(capacity: doorbells * (requestsPerDoorbell + 2) + 1024)
        await device?.attach(recorder: recorder)  // before the vCPUs start: no doorbell has rung yet
        await Self.onLoop(loop) { alloc_count_begin() }
        try await vm.start()
        let reason = vm.waitForStop(timeout: 30 + Double(doorbells * requestsPerDoorbell) * 0.002)
        let allocations = await Self.onLoop(loop) { alloc_count_end() }
        await vm.tearDown()
        await device?.stop()
        let counters = await device?.counters ?? VirtioCounters()

        let output = vm.serial.text
        guard reason == .poweredOff else { throw BenchError("guest did not finish: \(reason)") }
        guard output.contains("TEST \(check) PASS") else {
            let line = output.split(separator: "\n").first { $0.hasPrefix("TEST \(check)") } ?? "no result line"
            throw BenchError("guest check failed: \(line)")
        }
        let services = try DoorbellService.group(recorder.events(), requests: requestsPerDoorbell)
        guard services.count == (device == nil ? 0 : doorbells), recorder.recordedCount <= recorder.capacity else {
            throw BenchError("the device recorded \(services.count) doorbells, expected \(doorbells)")
        }
        var starts: [UInt64] = [], ends: [UInt64] = []
        for index in 0..<count {
            starts.append(try memory.read(at: GuestAddress(sampleBuffer + 16 * UInt64(index))))
            ends.append(try memory.read(at: GuestAddress(sampleBuffer + 16 * UInt64(index) + 8)))
        }
        return Output(services: Array(services.suffix(count)), guestStarts: starts, guestEnds: ends,
                      tscOffset: vm.tscOffset, counters: counters, loopAllocations: allocations)
    }

    /// Runs `body` on `loop`'s thread and returns its result.
    static func onLoop<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in loop.execute { continuation.resume(returning: body()) } }
    }
}
