// TestsVirtioMem.swift: `virtiomem`, the virtio-mem device (virtio 1.2 §5.15) driven as Linux's
// virtio_mem driver drives it, with the host resizing it through the API while the check waits.

enum VirtioMem {
    static let deviceID: UInt16 = 24
    // struct virtio_mem_config offsets.
    static let blockSize = 0, address = 16, regionSize = 24, usableRegionSize = 32, pluggedSize = 40, requestedSize = 48
    // Requests, responses, states.
    static let plug: UInt16 = 0, unplug: UInt16 = 1, unplugAll: UInt16 = 2, state: UInt16 = 3
    static let ack: UInt16 = 0, nack: UInt16 = 1, error: UInt16 = 3
    static let plugged: UInt16 = 0, unplugged: UInt16 = 1, mixed: UInt16 = 2
    /// The VMM's identity map covers 4 GiB through PDPT entries 0-3 (Layout.pdpt); the region above it
    /// gets entry 4 for the check's duration.
    static let pdpt: UInt64 = 0xA000
    static let mappedStart: UInt64 = 4 << 30
}

extension VirtioMem {
    /// Whether any E820 entry (of any type) overlaps [start, start + size): the region must be in none.
    static func inE820(_ boot: BootParams, start: UInt64, size: UInt64) -> Bool {
        guard let page = UnsafeRawPointer(bitPattern: boot.address) else { return true }
        let entries = Int(page.load(fromByteOffset: DirtyRam.e820EntriesOffset, as: UInt8.self))
        for index in 0..<min(entries, 128) {
            let entry = page + DirtyRam.e820TableOffset + index * 20
            let address = entry.loadUnaligned(as: UInt64.self)
            let length = entry.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            if address < start + size && start < address &+ length { return true }
        }
        return false
    }
}

/// The device's request queue with one request and one response buffer.
struct VirtioMemQueue {
    var queue: Virtqueue
    let request = DmaMemory.allocate(64, alignment: 64)
    let response = DmaMemory.allocate(64, alignment: 64)

    /// Sends one 24-byte request; the 10-byte response's type and state.
    mutating func send(_ type: UInt16, _ address: UInt64 = 0, blocks: UInt16 = 0) throws(DriverError) -> (type: UInt16, state: UInt16) {
        let out = MmioBlock(base: request)
        out.write32(UInt32(type), at: 0)
        out.write32(0, at: 4)
        out.write32(UInt32(truncatingIfNeeded: address), at: 8)
        out.write32(UInt32(truncatingIfNeeded: address >> 32), at: 12)
        out.write32(UInt32(blocks), at: 16)
        out.write32(0, at: 20)
        let back = MmioBlock(base: response)
        back.write32(0xFFFF_FFFF, at: 0)
        back.write32(0xFFFF_FFFF, at: 8)
        var chain = BufferChain()
        chain.readable(request, 24)
        chain.writable(response, 10)
        let used = try performRequest(&queue, chain)
        guard used.length == 10 else { throw DriverError("response-length", used.length) }
        return (back.read16(at: 0), back.read16(at: 8))
    }

    /// A request the device must refuse by shape (no room for the response): returned with length 0.
    mutating func sendWithoutResponse() throws(DriverError) -> UInt32 {
        var chain = BufferChain()
        chain.readable(request, 24)
        return try performRequest(&queue, chain).length
    }
}

/// `virtiomem` (by name only): finds the virtio-mem device, checks its configuration and refusals (PLUG
/// beyond requested_size → NACK; misaligned, zero-block, out-of-region, unknown → ERROR; a chain without a
/// response buffer → length 0), prints `VIRTIOMEM READY`; waits for the configuration interrupt of a
/// resize, plugs what is requested, writes and reads back a pattern in it, checks STATE (plugged, mixed),
/// prints `VIRTIOMEM PLUGGED <bytes>`; waits for the shrink, unplugs one block (which then reads zero),
/// UNPLUG_ALL, checks plugged_size 0 and STATE unplugged. Waits are bounded by `vmem_wait` TSC cycles.
/// Detail: `block=2097152 region=134217728 plugged=4194304 unplugged`.
func virtioMemTest(_ context: inout TestContext) -> Bool {
    let limit = context.boot.commandLine.commandLineValue(of: "vmem_wait").flatMap { $0.parsedUnsigned() } ?? 60_000_000_000
    let boot = context.boot
    let ok = withVirtioDevice(VirtioMem.deviceID, &context.detail) { device, detail throws(DriverError) in
        try device.start(wanted: 0)
        var mem = VirtioMemQueue(queue: try device.setUpQueue(0))
        try device.setDriverOK()
        let config = device.deviceConfig
        func read64(_ offset: Int) -> UInt64 { UInt64(config.read32(at: offset + 4)) << 32 | UInt64(config.read32(at: offset)) }
        let block = read64(VirtioMem.blockSize), start = read64(VirtioMem.address), size = read64(VirtioMem.regionSize)
        detail.write("block=")
        detail.write(decimal: block)
        detail.write(" region=")
        detail.write(decimal: size)
        guard block == 2 << 20, start % (128 << 20) == 0, size % (128 << 20) == 0, size > 0 else { throw DriverError("config-addr", start) }
        guard read64(VirtioMem.usableRegionSize) == size else { throw DriverError("usable", read64(VirtioMem.usableRegionSize)) }
        guard read64(VirtioMem.pluggedSize) == 0, read64(VirtioMem.requestedSize) == 0 else { throw DriverError("requested-at-boot", read64(VirtioMem.requestedSize)) }
        guard start >= VirtioMem.mappedStart, start + size <= VirtioMem.mappedStart + (1 << 30) else { throw DriverError("region-not-in-5th-gib", start) }
        guard !VirtioMem.inE820(boot, start: start, size: size) else { throw DriverError("region-in-e820", start) }

        // Refusals before anything is requested.
        func expect(_ answer: (type: UInt16, state: UInt16), _ type: UInt16, _ what: StaticString) throws(DriverError) {
            guard answer.type == type else { throw DriverError(what, answer.type) }
        }
        try expect(try mem.send(VirtioMem.plug, start, blocks: 1), VirtioMem.nack, "plug-beyond-requested")
        try expect(try mem.send(VirtioMem.state, start + 4096, blocks: 1), VirtioMem.error, "state-misaligned")
        try expect(try mem.send(VirtioMem.unplug, start, blocks: 0), VirtioMem.error, "unplug-zero-blocks")
        try expect(try mem.send(VirtioMem.unplug, start, blocks: 1), VirtioMem.error, "unplug-unplugged")
        try expect(try mem.send(7, start, blocks: 1), VirtioMem.error, "unknown-type")
        let state = try mem.send(VirtioMem.state, start, blocks: UInt16(size / block))
        guard state.type == VirtioMem.ack, state.state == VirtioMem.unplugged else { throw DriverError("state-at-boot", state.state) }
        guard try mem.sendWithoutResponse() == 0 else { throw DriverError("no-response-buffer-used") }

        var console = Serial.com1
        console.write("VIRTIOMEM READY\n")
        let configVector = device.firstVector
        func waitForResize(from seen: UInt32) -> Bool {
            Interrupts.wait(for: configVector, changingFrom: seen, until: CPU.timestamp() &+ limit)
        }
        var seen = Interrupts.count(of: configVector)
        guard waitForResize(from: seen), read64(VirtioMem.requestedSize) > 0 else { throw DriverError("no-resize", read64(VirtioMem.requestedSize)) }
        seen = Interrupts.count(of: configVector)
        let requested = read64(VirtioMem.requestedSize)
        let blocks = UInt16(requested / block)
        guard blocks >= 2 else { throw DriverError("requested", requested) }
        // Out of the region and misaligned, now that plugging would be within requested_size: ERROR.
        try expect(try mem.send(VirtioMem.plug, start + size, blocks: 1), VirtioMem.error, "plug-past-region")
        try expect(try mem.send(VirtioMem.plug, start &- block, blocks: 1), VirtioMem.error, "plug-below-region")
        try expect(try mem.send(VirtioMem.plug, start + 4096, blocks: 1), VirtioMem.error, "plug-misaligned")
        try expect(try mem.send(VirtioMem.plug, start, blocks: blocks), VirtioMem.ack, "plug")
        guard read64(VirtioMem.pluggedSize) == requested else { throw DriverError("plugged-size", read64(VirtioMem.pluggedSize)) }
        try expect(try mem.send(VirtioMem.plug, start + requested, blocks: 1), VirtioMem.nack, "plug-more")
        try expect(try mem.send(VirtioMem.plug, start, blocks: 1), VirtioMem.nack, "plug-again")
        let all = try mem.send(VirtioMem.state, start, blocks: blocks)
        let mixed = try mem.send(VirtioMem.state, start, blocks: blocks + 1)
        guard all == (VirtioMem.ack, VirtioMem.plugged), mixed == (VirtioMem.ack, VirtioMem.mixed) else { throw DriverError("state-plugged", all.state << 8 | mixed.state) }

        // Use the plugged memory: map the fifth GiB, write a pattern over it, read it back.
        let directory = DmaMemory.allocate(4096)
        for entry in 0..<512 {
            let physical = VirtioMem.mappedStart + UInt64(entry) * (2 << 20)
            MmioBlock(base: directory + UInt64(entry * 8)).write32(UInt32(truncatingIfNeeded: physical) | 0x83, at: 0)  // P, RW, PS
            MmioBlock(base: directory + UInt64(entry * 8)).write32(UInt32(truncatingIfNeeded: physical >> 32), at: 4)
        }
        let pdptEntry = MmioBlock(base: VirtioMem.pdpt + 4 * 8)
        pdptEntry.write32(UInt32(truncatingIfNeeded: directory) | 0x3, at: 0)
        pdptEntry.write32(0, at: 4)
        cpu_reload_cr3()
        defer {
            pdptEntry.write32(0, at: 0)
            cpu_reload_cr3()
        }
        let pattern: UInt64 = 0xA5C3_5A3C_0F1E_2D4B
        memory_fill64(start, pattern, requested / 8)
        var offset: UInt64 = 0
        while offset < requested {
            let word = UInt64(mmio_read32(start + offset + 4)) << 32 | UInt64(mmio_read32(start + offset))
            guard word == pattern else { throw DriverError("pattern-mismatch-at", offset) }
            offset += 64 << 10
        }
        detail.write(" plugged=")
        detail.write(decimal: requested)
        console.write("VIRTIOMEM PLUGGED ")
        console.write(decimal: requested)
        console.write("\n")

        // The shrink: unplug one block (it reads zero afterwards: the host dropped it), then the rest at once.
        guard waitForResize(from: seen), read64(VirtioMem.requestedSize) < requested else { throw DriverError("no-shrink", read64(VirtioMem.requestedSize)) }
        try expect(try mem.send(VirtioMem.unplug, start, blocks: 1), VirtioMem.ack, "unplug")
        guard read64(VirtioMem.pluggedSize) == requested - block else { throw DriverError("plugged-after-unplug", read64(VirtioMem.pluggedSize)) }
        guard mmio_read32(start) == 0, mmio_read32(start + block - 4) == 0 else { throw DriverError("unplugged-not-zero", mmio_read32(start)) }
        guard mmio_read32(start + block) == UInt32(truncatingIfNeeded: pattern) else { throw DriverError("plugged-lost") }
        let partly = try mem.send(VirtioMem.state, start, blocks: 2)
        guard partly == (VirtioMem.ack, VirtioMem.mixed) else { throw DriverError("state-mixed", partly.state) }
        try expect(try mem.send(VirtioMem.unplugAll), VirtioMem.ack, "unplug-all")
        let none = try mem.send(VirtioMem.state, start, blocks: blocks)
        guard read64(VirtioMem.pluggedSize) == 0, none == (VirtioMem.ack, VirtioMem.unplugged) else { throw DriverError("after-unplug-all", read64(VirtioMem.pluggedSize)) }
        guard mmio_read32(start + block) == 0 else { throw DriverError("unplug-all-not-zero") }
        detail.write(" unplugged")
        try checkInterrupts(mem.queue)
        return true
    }
    guard let ok else {
        context.detail.write("no virtio-mem device")
        return false
    }
    return ok
}
