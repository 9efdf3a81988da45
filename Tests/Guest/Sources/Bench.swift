// Bench.swift: `bench-pio` and `bench-mmio`, the guest side of actor-vmm-bench's exit round trips.
//
// Command-line parameters (all optional):
//   bench_n=N        measured write/read round trips per pass (default 10000)
//   bench_warmup=W   untimed round trips before them (default 1000)
//   bench_buf=ADDR   guest-physical address (decimal or 0x hex, identity-mapped RAM) where the
//                    per-access cycle counts of pass 2 are stored: 2*N little-endian u32s, for
//                    round trip i [2i] = rdtsc around the write, [2i+1] = rdtsc around the read.
//                    The VMM reads them from guest memory after power-off. Without it nothing
//                    is stored.
//
// Two passes, because on a host whose ring-0 guest code is emulated every guest instruction
// between two exits is expensive: pass 1 runs a lean loop (no rdtsc, no stores) for the
// host's timestamps; pass 2 brackets every access with rdtsc for the guest's own view.
// The access sequence is a contract with the benchmark, which finds the passes on the host by
// it: read magic (identify); W lean write/read pairs; read magic (marker A); pass 1: N lean
// pairs; read magic (marker B); pass 2: N timed pairs; read magic (marker C); read the write
// counter. Every reply is checked, as in `pio`.
// Detail: `n=N warmup=W min=<cycles> mean=<cycles>` (pass 2, per access, writes and reads).

func benchPortTest(_ context: inout TestContext) -> Bool {
    benchRoundTrips(PortBlock(base: TestDevice.portBase), &context)
}

func benchMmioTest(_ context: inout TestContext) -> Bool {
    benchRoundTrips(MmioBlock(base: TestDevice.mmioBase), &context)
}

func benchRoundTrips(_ device: some RegisterBlock, _ context: inout TestContext) -> Bool {
    let line = context.boot.commandLine
    let count = line.commandLineValue(of: "bench_n").flatMap { $0.parsedUnsigned() } ?? 10_000
    let warmup = line.commandLineValue(of: "bench_warmup").flatMap { $0.parsedUnsigned() } ?? 1_000
    let buffer = line.commandLineValue(of: "bench_buf").flatMap { $0.parsedUnsigned() }
        .flatMap { UnsafeMutablePointer<UInt32>(bitPattern: UInt($0)) }

    let magic = device.read32(at: TestDevice.magic)
    guard magic == TestDevice.magicValue else {
        context.detail.write("magic=")
        context.detail.write(hex: magic, digits: 8)
        return false
    }
    // Touch every page of the sample buffer now, so no page fault lands inside the timed loop.
    if let buffer {
        for index in 0..<(2 * Int(count)) { buffer[index] = 0 }
    }
    let writesBefore = device.read32(at: TestDevice.writeCount)

    var mismatches = leanRoundTrips(device, count: warmup)
    _ = device.read32(at: TestDevice.magic)  // marker A
    mismatches += leanRoundTrips(device, count: count)
    _ = device.read32(at: TestDevice.magic)  // marker B

    var total: UInt64 = 0
    var minimum = UInt64.max
    for index in 0..<Int(count) {
        let value = benchValue(index)
        let t0 = CPU.timestamp()
        device.write32(value, at: TestDevice.value)
        let t1 = CPU.timestamp()
        let answer = device.read32(at: TestDevice.value)
        let t2 = CPU.timestamp()
        if answer != ~value { mismatches += 1 }
        let write = t1 &- t0, read = t2 &- t1
        total &+= write &+ read
        minimum = min(minimum, min(write, read))
        if let buffer {
            buffer[2 * index] = UInt32(truncatingIfNeeded: min(write, UInt64(UInt32.max)))
            buffer[2 * index + 1] = UInt32(truncatingIfNeeded: min(read, UInt64(UInt32.max)))
        }
    }
    _ = device.read32(at: TestDevice.magic)  // marker C
    let writes = device.read32(at: TestDevice.writeCount) &- writesBefore
    let expected = UInt32(truncatingIfNeeded: warmup &+ 2 &* count)

    var passed = true
    if mismatches != 0 {
        passed = false
        context.detail.write("mismatches=")
        context.detail.write(decimal: mismatches)
        context.detail.write(" ")
    }
    if writes != expected {
        passed = false
        context.detail.write("writes=")
        context.detail.write(decimal: writes)
        context.detail.write(" expected=")
        context.detail.write(decimal: expected)
        context.detail.write(" ")
    }
    context.detail.write("n=")
    context.detail.write(decimal: count)
    context.detail.write(" warmup=")
    context.detail.write(decimal: warmup)
    if count > 0 {
        context.detail.write(" min=")
        context.detail.write(decimal: minimum)
        context.detail.write(" mean=")
        context.detail.write(decimal: total / (2 * count))
    }
    return passed
}

/// `count` write/read round trips with as few guest instructions between the accesses as possible;
/// returns how many replies were wrong.
private func leanRoundTrips(_ device: some RegisterBlock, count: UInt64) -> Int {
    var mismatches = 0
    var value: UInt32 = 0x0F0F_0F0F
    for _ in 0..<count {
        device.write32(value, at: TestDevice.value)
        if device.read32(at: TestDevice.value) != ~value { mismatches += 1 }
        value &+= 0x9E37_79B9
    }
    return mismatches
}

/// The value written in round trip `index` (different every time, as in `pio`).
private func benchValue(_ index: Int) -> UInt32 {
    UInt32(truncatingIfNeeded: index) &* 0x9E37_79B9 ^ 0x0F0F_0F0F
}

extension UnsafeBufferPointer<UInt8> {
    /// The bytes as an unsigned number, decimal or `0x` hexadecimal; nil if empty, malformed or too big.
    func parsedUnsigned() -> UInt64? {
        var digits = self[...]
        var radix: UInt64 = 10
        if count > 2, self[0] == UInt8(ascii: "0"), self[1] | 0x20 == UInt8(ascii: "x") {
            radix = 16
            digits = self[2...]
        }
        guard !digits.isEmpty else { return nil }
        var value: UInt64 = 0
        for byte in digits {
            let digit: UInt64
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt64(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f") where radix == 16: digit = UInt64(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F") where radix == 16: digit = UInt64(byte - UInt8(ascii: "A") + 10)
            default: return nil
            }
            let (product, overflow1) = value.multipliedReportingOverflow(by: radix)
            let (sum, overflow2) = product.addingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { return nil }
            value = sum
        }
        return value
    }
}
