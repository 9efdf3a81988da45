// libFuzzer entry points for every ActorVMM parser a guest or an API client reaches. One executable holds
// all targets; ACTORVMM_FUZZ_TARGET names the one to run (Tests/Fuzz/run.sh sets it). Built only by
// run.sh (ACTORVMM_FUZZ=1, -sanitize=fuzzer,address): never by `swift build` or `swift test`.
import ActorVmm
import Glibc

/// One fuzz target: a name, what it covers, and the function that runs one input. `run` traps (a finding)
/// when an invariant breaks; returning normally means the input was handled.
struct FuzzTarget: Sendable {
    let name: String
    let covers: String
    let run: @Sendable ([UInt8]) -> Void
}

/// Every target, in the order run.sh runs them.
let allTargets: [FuzzTarget] = [
    FuzzTarget(name: "split_queue", covers: "SplitQueue.pop/parseChain/complete, DescriptorChain copies", run: splitQueueTarget),
    FuzzTarget(name: "virtio_pci", covers: "virtio-pci BAR0 (common config, ISR, notify, device config, MSI-X) and config space", run: virtioPciTarget),
    FuzzTarget(name: "virtio_blk", covers: "virtio-blk requests over a driver script", run: virtioBlockTarget),
    FuzzTarget(name: "virtio_net", covers: "virtio-net transmit headers/frames and receive into guest buffers", run: virtioNetTarget),
    FuzzTarget(name: "virtio_console", covers: "virtio-console transmit and receive", run: virtioConsoleTarget),
    FuzzTarget(name: "virtio_rng", covers: "virtio-rng requests", run: virtioRngTarget),
    FuzzTarget(name: "virtio_mem", covers: "virtio-mem requests (plug, unplug, unplug all, state) and their books", run: virtioMemTarget),
    FuzzTarget(name: "pci_config", covers: "PCI configuration space, 0xCF8/0xCFC ports, host bridge", run: pciConfigTarget),
    FuzzTarget(name: "msix", covers: "MSI-X table, PBA, control bits, signalling", run: msixTarget),
    FuzzTarget(name: "uart", covers: "8250 UART registers and host input", run: uartTarget),
    FuzzTarget(name: "i8042", covers: "i8042 ports", run: i8042Target),
    FuzzTarget(name: "http", covers: "HTTP/1.1 request parser, fed in pieces", run: httpTarget),
    FuzzTarget(name: "json", covers: "JSON parser and serialiser round trip", run: jsonTarget),
    FuzzTarget(name: "vmconfig", covers: "VmConfig from Cloud Hypervisor JSON (vm.create body)", run: vmConfigTarget),
    FuzzTarget(name: "cli_options", covers: "command-line options parser (NUL-separated arguments)", run: cliOptionsTarget),
    FuzzTarget(name: "kernel_elf", covers: "ELF64 parser and loader (raw file bytes)", run: kernelElfTarget),
    FuzzTarget(name: "kernel_pvh", covers: "ELF64 with a PVH note: segments and note from the input", run: kernelPvhTarget),
    FuzzTarget(name: "kernel_bzimage", covers: "bzImage setup header and loader", run: kernelBzImageTarget),
    FuzzTarget(name: "x86_decoder", covers: "x86-64 instruction decoder (compat emulation)", run: decoderTarget),
]

// SAFETY: written once in LLVMFuzzerInitialize, before libFuzzer calls LLVMFuzzerTestOneInput (one thread).
nonisolated(unsafe) var selectedTarget: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    let name = getenv("ACTORVMM_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = allTargets.first(where: { $0.name == name }) else {
        var text = "actor-vmm-fuzz: set ACTORVMM_FUZZ_TARGET to one of:\n"
        for target in allTargets { text += "  \(target.name)\t\(target.covers)\n" }
        writeError(text)
        exit(2)
    }
    Log.setLevel(.error)  // guest-caused warnings would flood the output
    signal(SIGPIPE, SIG_IGN)
    selectedTarget = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    selectedTarget?.run(input)
    return 0
}

/// Consumes a fuzz input front to back; past the end it yields zeros, so every input is a valid script.
struct FuzzInput: Sendable {
    let bytes: [UInt8]
    private(set) var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isEmpty: Bool { position >= bytes.count }
    var remaining: Int { max(0, bytes.count - position) }

    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(truncatingIfNeeded: byte()) << (8 * i) }
        return value
    }

    mutating func bool() -> Bool { byte() & 1 != 0 }

    /// One of 1, 2, 4, 8 (access widths).
    mutating func width() -> Int { 1 << Int(byte() & 3) }

    /// Up to `count` bytes (fewer at the end of the input).
    mutating func take(_ count: Int) -> [UInt8] {
        let n = min(count, remaining)
        defer { position += n }
        return Array(bytes[position..<(position + n)])
    }

    /// The rest of the input.
    mutating func rest() -> [UInt8] { take(remaining) }
}

/// All-ones in the low `width` bytes: the largest value a `width`-byte read may return.
func widthMask(_ width: Int) -> UInt64 { width >= 8 ? ~0 : (1 << (UInt64(width) * 8)) - 1 }

/// Stops the run with a finding (libFuzzer saves the input as a crash).
func finding(_ message: String) -> Never {
    writeError("actor-vmm-fuzz: invariant broken: \(message)\n")
    abort()
}

/// Writes `text` to stderr, unbuffered.
func writeError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}
