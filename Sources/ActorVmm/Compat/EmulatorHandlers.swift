/// The handlers: one per emulated instruction, each checking what a real CPU checks, in the order it
/// checks it (#UD, then #NM, then memory faults, then operand faults), and either completing the
/// instruction on `registers` or naming the exception it raises.

/// What a handler decided.
enum HandlerResult: Equatable {
    /// Commit `registers` (RIP advanced past the instruction).
    case completed
    /// Commit `registers`, then deliver the exception (a trap: `int3`'s #BP sees the next RIP).
    case trap(GuestException)
    /// Deliver the exception with RIP still at the instruction; nothing else changes.
    case fault(GuestException)
    /// Cannot be emulated faithfully: stop the VM, saying why.
    case unhandled(String)
}

/// Why an operand access did not complete.
enum AccessFailure: Error {
    /// The access faults in the guest (#GP/#SS for a non-canonical address, #PF for an unmapped page).
    case raise(GuestException)
    /// The page is mapped to something that is not RAM (an MMIO page): not emulated.
    case notRam(UInt64)
    /// An ioctl failed.
    case host(KvmError)
}

/// One instruction being emulated: the vCPU, a working copy of its registers, and the decoded instruction.
struct EmulationContext<Cpu: EmulatedCpu> {
    let cpu: Cpu
    var registers: GuestRegisters
    let control: GuestControlState
    let instruction: DecodedInstruction

    /// RIP after this instruction.
    var nextRip: UInt64 { registers.rip &+ UInt64(instruction.length) }

    private var lockedOrPrefixed: Bool {
        let p = instruction.prefixes
        return p.lock || p.operandSizeOverride || p.rep || p.repne
    }

    // MARK: int3, clac, stac

    /// `int3` (CC): #BP is a trap, so the handler sees RIP after the instruction.
    mutating func int3() -> HandlerResult {
        if instruction.prefixes.lock { return .fault(.invalidOpcode) }
        registers.rip = nextRip
        return .trap(.breakpoint)
    }

    /// `clac` (0F 01 CA) / `stac` (0F 01 CB): RFLAGS.AC. Prefixes other than REX make it a different
    /// (undefined) encoding.
    mutating func setAlignmentCheck(_ on: Bool) -> HandlerResult {
        if instruction.prefixes.lock { return .fault(.invalidOpcode) }
        if lockedOrPrefixed { return .unhandled("unexpected prefix") }
        registers.rflags = on ? registers.rflags | Rflags.alignmentCheck : registers.rflags & ~Rflags.alignmentCheck
        registers.rip = nextRip
        return .completed
    }

    // MARK: popcnt

    /// `popcnt r, r/m` (F3 [REX] 0F B8 /r), 16, 32 or 64 bits. ZF is set iff the source is 0; CF, OF, SF,
    /// AF and PF are cleared. A 32-bit destination is zero-extended, a 16-bit one keeps bits 16–63.
    mutating func popcnt() throws(KvmError) -> HandlerResult {
        if instruction.prefixes.lock { return .fault(.invalidOpcode) }
        guard let reg = instruction.reg, let destination = Gpr(rawValue: reg), let rm = instruction.rm else {
            return .unhandled("malformed popcnt")
        }
        let size = instruction.operandSize / 8
        let mask: UInt64 = size == 8 ? ~0 : (1 << UInt64(size * 8)) - 1
        let source: UInt64
        switch rm {
        case .register(let number):
            guard let register = Gpr(rawValue: number) else { return .unhandled("malformed popcnt") }
            source = registers[register] & mask
        case .memory(let operand):
            switch readOperand(operand, size: size) {
            case .success(let bytes): source = littleEndian(bytes)
            case .failure(let failure): return try result(of: failure)
            }
        }
        let count = UInt64(source.nonzeroBitCount)
        switch size {
        case 2: registers[destination] = (registers[destination] & ~0xFFFF) | count
        default: registers[destination] = count  // 32-bit results are zero-extended
        }
        registers.rflags &= ~Rflags.status
        if source == 0 { registers.rflags |= Rflags.zero }
        registers.rip = nextRip
        return .completed
    }

    // MARK: fwait

    /// `fwait` (9B): #NM when CR0.MP and CR0.TS are set; otherwise a no-op unless an unmasked x87
    /// exception is pending, which would raise #MF — that case is not emulated (stop, with the words).
    mutating func fwait() throws(KvmError) -> HandlerResult {
        if instruction.prefixes.lock { return .fault(.invalidOpcode) }
        let mpAndTs = GuestControlState.cr0MonitorCoprocessor | GuestControlState.cr0TaskSwitched
        if control.cr0 & mpAndTs == mpAndTs { return .fault(.deviceNotAvailable) }
        let fpu = try cpu.fpuControl()
        if fpu.x87ExceptionPending {
            return .unhandled("an unmasked x87 exception is pending (FSW \(hex(fpu.fsw)), FCW \(hex(fpu.fcw))); #MF is not emulated")
        }
        registers.rip = nextRip
        return .completed
    }

    // MARK: ldmxcsr, stmxcsr

    /// #UD and #NM conditions shared by the legacy SSE state instructions.
    private func sseStateFault() -> GuestException? {
        if lockedOrPrefixed { return .invalidOpcode }
        if control.cr0 & GuestControlState.cr0Emulation != 0 || control.cr4 & GuestControlState.cr4Osfxsr == 0 {
            return .invalidOpcode
        }
        if control.cr0 & GuestControlState.cr0TaskSwitched != 0 { return .deviceNotAvailable }
        return nil
    }

    /// `ldmxcsr m32` (0F AE /2): #GP(0) if the value sets bits outside the CPU's MXCSR mask.
    mutating func ldmxcsr() throws(KvmError) -> HandlerResult {
        if let fault = sseStateFault() { return .fault(fault) }
        guard case .memory(let operand) = instruction.rm else { return .fault(.invalidOpcode) }
        let value: UInt32
        switch readOperand(operand, size: 4) {
        case .success(let bytes): value = UInt32(truncatingIfNeeded: littleEndian(bytes))
        case .failure(let failure): return try result(of: failure)
        }
        let fpu = try cpu.fpuControl()
        let mask = fpu.mxcsrMask == 0 ? 0xFFBF : fpu.mxcsrMask
        if value & ~mask != 0 { return .fault(.generalProtection) }
        try cpu.setMxcsr(value)
        registers.rip = nextRip
        return .completed
    }

    /// `stmxcsr m32` (0F AE /3).
    mutating func stmxcsr() throws(KvmError) -> HandlerResult {
        if let fault = sseStateFault() { return .fault(fault) }
        guard case .memory(let operand) = instruction.rm else { return .fault(.invalidOpcode) }
        let value = try cpu.fpuControl().mxcsr
        if let failure = writeOperand(operand, bytes: withUnsafeBytes(of: value.littleEndian) { Array($0) }) {
            return try result(of: failure)
        }
        registers.rip = nextRip
        return .completed
    }

    // MARK: cmpxchg16b

    /// `[lock] cmpxchg16b m128` (REX.W 0F C7 /1): compares RDX:RAX with the 16 bytes at the operand; if
    /// equal, stores RCX:RBX and sets ZF, else loads them into RDX:RAX and clears ZF. #GP(0) unless the
    /// operand is 16-byte aligned.
    ///
    /// Atomicity: this vCPU is stopped while it is emulated, but other vCPUs run. The exchange is a host
    /// `lock cmpxchg16b` on the guest page (``GuestMemory/compareExchange128(at:expected:desired:)``),
    /// atomic against every other vCPU and device touching those 16 bytes — what the hardware instruction
    /// gives, with or without the LOCK prefix. An aligned operand never crosses a page, so it is one
    /// translation. Not checked: write permission (``KvmEmulatedCpu/translate(_:)``).
    mutating func cmpxchg16b() throws(KvmError) -> HandlerResult {
        let p = instruction.prefixes
        if p.rep || p.repne { return .unhandled("unexpected prefix") }
        guard case .memory(let operand) = instruction.rm else { return .fault(.invalidOpcode) }
        let linear = linearAddress(operand)
        if linear & 15 != 0 { return .fault(.generalProtection) }
        if let exception = canonicalFault(operand, linear, size: 16) { return .fault(exception) }
        guard let physical = try cpu.translate(linear) else { return .fault(.pageFault(at: linear, write: true)) }
        let expected = (registers[.rax], registers[.rdx])
        let desired = (registers[.rbx], registers[.rcx])
        let outcome: (exchanged: Bool, found: (UInt64, UInt64))
        do {
            outcome = try cpu.memory.compareExchange128(at: GuestAddress(physical), expected: expected, desired: desired)
        } catch {
            return .unhandled("the operand at physical \(hex(physical)) is not RAM")
        }
        if outcome.exchanged {
            registers.rflags |= Rflags.zero
        } else {
            registers.rflags &= ~Rflags.zero
            registers[.rax] = outcome.found.0
            registers[.rdx] = outcome.found.1
        }
        registers.rip = nextRip
        return .completed
    }

    // MARK: operands

    /// The operand's linear address (FS/GS bases applied; other segments have base 0 in 64-bit mode).
    func linearAddress(_ operand: MemoryOperand) -> UInt64 {
        let base = operand.segment == .fs ? control.fsBase : (operand.segment == .gs ? control.gsBase : 0)
        return operand.linearAddress(registers: registers, instructionEnd: nextRip, segmentBase: base)
    }

    /// #SS(0) for a stack-segment access, #GP(0) otherwise, when [linear, linear+size) is not canonical.
    func canonicalFault(_ operand: MemoryOperand, _ linear: UInt64, size: Int) -> GuestException? {
        let last = linear &+ UInt64(size - 1)
        if control.isCanonical(linear) && control.isCanonical(last) && last >= linear { return nil }
        return operand.segment == .ss ? .stackFault : .generalProtection
    }

    /// The physical pieces of [linear, linear+size): one per page touched, each translated.
    private func pieces(_ operand: MemoryOperand, size: Int, write: Bool) -> Result<[(UInt64, Int)], AccessFailure> {
        let linear = linearAddress(operand)
        if let exception = canonicalFault(operand, linear, size: size) { return .failure(.raise(exception)) }
        var result: [(UInt64, Int)] = []
        var address = linear, remaining = size
        while remaining > 0 {
            let count = min(remaining, Int(4096 - (address & 0xFFF)))
            let physical: UInt64?
            do { physical = try cpu.translate(address) } catch { return .failure(.host(error)) }
            guard let physical else { return .failure(.raise(.pageFault(at: address, write: write))) }
            guard cpu.memory.contains(GuestAddress(physical), count: count) else { return .failure(.notRam(physical)) }
            result.append((physical, count))
            address &+= UInt64(count)
            remaining -= count
        }
        return .success(result)
    }

    func readOperand(_ operand: MemoryOperand, size: Int) -> Result<[UInt8], AccessFailure> {
        pieces(operand, size: size, write: false).map { pieces in
            pieces.flatMap { (try? cpu.memory.readBytes(at: GuestAddress($0.0), count: $0.1)) ?? [] }
        }
    }

    /// Writes only after every page of the operand has translated, so a fault leaves memory untouched.
    func writeOperand(_ operand: MemoryOperand, bytes: [UInt8]) -> AccessFailure? {
        switch pieces(operand, size: bytes.count, write: true) {
        case .failure(let failure):
            return failure
        case .success(let pieces):
            var offset = 0
            for (physical, count) in pieces {
                try? cpu.memory.write(bytes: Array(bytes[offset..<offset + count]), at: GuestAddress(physical))
                offset += count
            }
            return nil
        }
    }

    func result(of failure: AccessFailure) throws(KvmError) -> HandlerResult {
        switch failure {
        case .raise(let exception): return .fault(exception)
        case .notRam(let physical): return .unhandled("the operand at physical \(hex(physical)) is not RAM")
        case .host(let error): throw error
        }
    }

    func littleEndian(_ bytes: [UInt8]) -> UInt64 {
        bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }
}
