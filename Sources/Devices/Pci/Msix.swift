import ActorVmm

/// MSI-X for one PCI function (PCI Local Bus 3.0 §6.8.2): the capability's control bits, the vector table
/// and the pending-bit array (both in a BAR), and delivery through injected ``MsiTarget``s.
///
/// Lives inside its device actor's isolation. A vector that is masked — by its own mask bit, the function
/// mask, or MSI-X being disabled — records the interrupt in the PBA instead; unmasking delivers it.
public struct Msix {
    public struct Entry: Equatable, Sendable {
        public var addressLow: UInt32 = 0
        public var addressHigh: UInt32 = 0
        public var data: UInt32 = 0
        public var control: UInt32 = 1  // masked after reset
        var address: UInt64 { UInt64(addressHigh) << 32 | UInt64(addressLow) }
        var masked: Bool { control & 1 != 0 }
    }

    public private(set) var entries: [Entry]
    public private(set) var pending: [Bool]
    public private(set) var enabled = false
    public private(set) var functionMasked = false
    let targets: [any MsiTarget]
    let controller: any MsiController
    /// Interrupts sent and interrupts held back by a mask (for counters).
    public private(set) var delivered: UInt64 = 0
    public private(set) var deferred: UInt64 = 0

    public init(targets: [any MsiTarget], controller: any MsiController) {
        self.targets = targets
        self.controller = controller
        entries = Array(repeating: Entry(), count: targets.count)
        pending = Array(repeating: false, count: targets.count)
    }

    public var vectorCount: Int { targets.count }

    /// The capability body (after id and next): message control, table offset/BIR, PBA offset/BIR. Only
    /// the enable (bit 15) and function-mask (bit 14) bits of message control are writable: byte 1 of the
    /// body, mask 0xC0.
    public static func capabilityBody(vectors: Int, bar: UInt8, tableOffset: UInt32, pbaOffset: UInt32) -> (body: [UInt8], writable: [Int: UInt8]) {
        let control = UInt16(vectors - 1)
        var body: [UInt8] = [UInt8(control & 0xFF), UInt8(control >> 8)]
        for word in [tableOffset | UInt32(bar), pbaOffset | UInt32(bar)] {
            for i in 0..<4 { body.append(UInt8(truncatingIfNeeded: word >> (8 * i))) }
        }
        return (body, [1: 0xC0])
    }

    /// Applies the message-control byte written by the driver (bits 7 and 6 of its high byte).
    public mutating func setControl(highByte: UInt8) {
        enabled = highByte & 0x80 != 0
        functionMasked = highByte & 0x40 != 0
        deliverUnmaskedPending()
    }

    func isMasked(_ vector: Int) -> Bool { !enabled || functionMasked || entries[vector].masked }

    /// Sends `vector`'s message, or marks it pending while masked. Out-of-range vectors (including the
    /// virtio NO_VECTOR 0xFFFF) are ignored.
    public mutating func signal(_ vector: Int) {
        guard vector >= 0, vector < targets.count else { return }
        if isMasked(vector) {
            pending[vector] = true
            deferred &+= 1
        } else {
            targets[vector].trigger()
            delivered &+= 1
        }
    }

    // MARK: - Table and PBA (BAR accesses)

    public func readTable(offset: UInt64, width: Int) -> UInt64 {
        let vector = Int(offset / 16), word = Int(offset % 16) / 4
        guard vector < entries.count, width == 4 || width == 8, offset % UInt64(width) == 0 else { return 0 }
        let e = entries[vector]
        let words = [e.addressLow, e.addressHigh, e.data, e.control]
        if width == 8 { return UInt64(words[word]) | UInt64(words[min(word + 1, 3)]) << 32 }
        return UInt64(words[word])
    }

    public mutating func writeTable(offset: UInt64, width: Int, value: UInt64) {
        guard width == 4 || width == 8, offset % UInt64(width) == 0 else { return }
        writeTableWord(offset: offset, value: UInt32(truncatingIfNeeded: value))
        if width == 8 { writeTableWord(offset: offset + 4, value: UInt32(truncatingIfNeeded: value >> 32)) }
    }

    private mutating func writeTableWord(offset: UInt64, value: UInt32) {
        let vector = Int(offset / 16)
        guard vector < entries.count else { return }
        let before = entries[vector]
        switch (offset % 16) / 4 {
        case 0: entries[vector].addressLow = value & ~3
        case 1: entries[vector].addressHigh = value
        case 2: entries[vector].data = value
        default: entries[vector].control = value & 1
        }
        let after = entries[vector]
        if after.address != before.address || after.data != before.data {
            controller.route(targets[vector], message: (after.address, after.data))
        }
        if before.masked && !after.masked { deliverUnmaskedPending() }
    }

    public func readPba(offset: UInt64, width: Int) -> UInt64 {
        var value: UInt64 = 0
        for bit in 0..<(width * 8) {
            let vector = Int(offset) * 8 + bit
            if vector < pending.count && pending[vector] { value |= 1 << UInt64(bit) }
        }
        return value
    }

    private mutating func deliverUnmaskedPending() {
        for vector in pending.indices where pending[vector] && !isMasked(vector) {
            pending[vector] = false
            targets[vector].trigger()
            delivered &+= 1
        }
    }

    /// Loads a snapshot's table, pending bits and control bits (counts checked by the caller) and routes
    /// every programmed vector again, as the new VM's routing table is empty. Nothing is delivered: a
    /// pending vector stays pending until the guest unmasks it, as before the snapshot.
    public mutating func restore(entries: [Entry], pending: [Bool], enabled: Bool, functionMasked: Bool) {
        precondition(entries.count == targets.count && pending.count == targets.count)
        self.entries = entries.map { var e = $0; e.addressLow &= ~3; e.control &= 1; return e }
        self.pending = pending
        self.enabled = enabled
        self.functionMasked = functionMasked
        for (vector, entry) in self.entries.enumerated() where entry.address != 0 || entry.data != 0 {
            controller.route(targets[vector], message: (entry.address, entry.data))
        }
    }

    /// Back to power-on state (device reset): all vectors masked, nothing pending.
    public mutating func reset() {
        entries = Array(repeating: Entry(), count: targets.count)
        pending = Array(repeating: false, count: targets.count)
        enabled = false
        functionMasked = false
    }
}
