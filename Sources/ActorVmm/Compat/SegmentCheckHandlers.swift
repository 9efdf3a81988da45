/// `lsl`, `lar`, `verr` and `verw`: the instructions that look a segment selector up in the GDT or LDT and
/// report through ZF whether the descriptor is visible (and, for `lsl`/`lar`, its limit or access rights).
///
/// Linux 6.1 runs `lsl` in ring 0 on every paranoid entry (NMI, #MC, #DB) when the CPU has FSGSBASE: it
/// reads the CPU number from the limit of GDT entry 15 (`GET_PERCPU_BASE`, arch/x86/entry/calling.h). `lar`
/// is in its signal delivery (`force_valid_ss`), `verw` in `CLEAR_CPU_BUFFERS` on the way back to user mode
/// and before idling when an MDS/TSA mitigation is on. This host's emulator rejects all four (measured).
///
/// Semantics (Intel SDM vol. 2 and AMD APM vol. 3, 64-bit mode): the selector's descriptor table is the GDT,
/// or the LDT when TI (bit 2) is set; a null selector, an index past the table's limit, an unusable LDTR, a
/// type the instruction does not accept, or DPL < max(CPL, RPL) (except for conforming code, and for
/// `verr` on readable conforming code) clear ZF and change nothing else. Otherwise ZF is set and `lsl`
/// loads the limit (scaled by G: `limit << 12 | 0xFFF`), `lar` the access rights (descriptor bits 40–55
/// with 48–51 clear: `high & 0x00F0FF00`; 16 bits: `high & 0xFF00`). The present bit is not checked (as on
/// the CPU). System types accepted in long mode: LDT (2) and 64-bit TSS (9, B) by `lsl`; those and the
/// 64-bit call gate (C) by `lar`; none by `verr`/`verw`. Only ZF changes among the flags.
///
/// Reading the descriptor is an ordinary supervisor access through the guest's page tables: a table on an
/// unmapped page raises #PF, a non-canonical one #GP(0).
extension EmulationContext {
    /// Which of the four.
    enum SegmentCheck { case lsl, lar, verr, verw }

    /// `lsl r, r/m16` (0F 03), `lar r, r/m16` (0F 02), `verr r/m16` (0F 00 /4), `verw r/m16` (0F 00 /5).
    mutating func segmentCheck(_ kind: SegmentCheck) throws(KvmError) -> HandlerResult {
        if instruction.prefixes.lock { return .fault(.invalidOpcode) }
        guard let rm = instruction.rm else { return .unhandled("malformed \(kind)") }
        let selector: UInt16
        switch rm {
        case .register(let number):
            guard let register = Gpr(rawValue: number) else { return .unhandled("malformed \(kind)") }
            selector = UInt16(truncatingIfNeeded: registers[register])
        case .memory(let operand):
            switch readOperand(operand, size: 2) {
            case .success(let bytes): selector = UInt16(truncatingIfNeeded: littleEndian(bytes))
            case .failure(let failure): return try result(of: failure)
            }
        }
        let descriptor: UInt64?
        switch try readDescriptor(selector) {
        case .success(let value): descriptor = value
        case .failure(let failure): return try result(of: failure)
        }
        var value: UInt64?
        if let descriptor, accepts(kind, descriptor: descriptor, selector: selector) {
            let high = UInt32(truncatingIfNeeded: descriptor >> 32)
            switch kind {
            case .lsl:
                let limit = UInt64(descriptor & 0xFFFF) | UInt64((high >> 16) & 0xF) << 16
                value = high & (1 << 23) != 0 ? limit << 12 | 0xFFF : limit
            case .lar:
                value = UInt64(high & (instruction.operandSize == 16 ? 0xFF00 : 0x00F0_FF00))
            case .verr, .verw:
                value = 0
            }
        }
        if let value {
            registers.rflags |= Rflags.zero
            if kind == .lsl || kind == .lar, let reg = instruction.reg, let destination = Gpr(rawValue: reg) {
                switch instruction.operandSize {
                case 16: registers[destination] = (registers[destination] & ~0xFFFF) | (value & 0xFFFF)
                case 32: registers[destination] = value & 0xFFFF_FFFF  // zero-extended, as every 32-bit write
                default: registers[destination] = value
                }
            }
        } else {
            registers.rflags &= ~Rflags.zero
        }
        registers.rip = nextRip
        return .completed
    }

    /// The 8-byte descriptor `selector` names, or nil when there is none to read (null selector, index past
    /// the limit, no LDT).
    private func readDescriptor(_ selector: UInt16) throws(KvmError) -> Result<UInt64?, AccessFailure> {
        guard selector & 0xFFFC != 0 else { return .success(nil) }
        guard let table = selector & 4 != 0 ? control.ldt : control.gdt else { return .success(nil) }
        let offset = UInt32(selector & 0xFFF8)
        guard offset + 7 <= table.limit else { return .success(nil) }
        var operand = MemoryOperand()
        operand.displacement = Int64(bitPattern: table.base &+ UInt64(offset))
        return readOperand(operand, size: 8).map { littleEndian($0) }
    }

    /// Whether `kind` accepts the descriptor at the current privilege level.
    private func accepts(_ kind: SegmentCheck, descriptor: UInt64, selector: UInt16) -> Bool {
        let type = UInt8((descriptor >> 40) & 0xF)
        let system = (descriptor >> 44) & 1 == 0
        let dpl = UInt8((descriptor >> 45) & 3)
        let visible = dpl >= max(control.cpl, UInt8(selector & 3))
        if system {
            switch kind {
            case .lsl: return [0x2, 0x9, 0xB].contains(type) && visible
            case .lar: return [0x2, 0x9, 0xB, 0xC].contains(type) && visible
            case .verr, .verw: return false
            }
        }
        let code = type & 0x8 != 0
        let conforming = code && type & 0x4 != 0
        let readableOrWritable = type & 0x2 != 0  // code: readable; data: writable
        switch kind {
        case .lsl, .lar: return conforming || visible
        case .verr: return code ? readableOrWritable && (conforming || visible) : visible
        case .verw: return !code && readableOrWritable && visible
        }
    }
}
