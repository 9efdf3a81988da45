import CKvm
import Synchronization

/// The instructions compatibility mode emulates (docs/compat.md). Also the counters' keys.
public enum EmulatedInstruction: Int, CaseIterable, Sendable, CustomStringConvertible {
    case int3, clac, stac, popcnt, fwait, ldmxcsr, stmxcsr, cmpxchg16b, lsl, lar, verr, verw

    public var description: String {
        switch self {
        case .int3: "int3"
        case .clac: "clac"
        case .stac: "stac"
        case .popcnt: "popcnt"
        case .fwait: "fwait"
        case .ldmxcsr: "ldmxcsr"
        case .stmxcsr: "stmxcsr"
        case .cmpxchg16b: "cmpxchg16b"
        case .lsl: "lsl"
        case .lar: "lar"
        case .verr: "verr"
        case .verw: "verw"
        }
    }
}

/// What emulating one instruction came to.
public enum EmulationOutcome: Sendable, Equatable {
    /// Done; the guest continues after it (for `int3`, in its #BP handler, as on a real CPU).
    case emulated(EmulatedInstruction)
    /// The instruction faults as it would on a real CPU (e.g. #GP for a misaligned `cmpxchg16b`); the
    /// exception has been injected and RIP still points at the instruction.
    case faulted(EmulatedInstruction?, GuestException)
    /// Cannot be emulated: stop the VM for this reason.
    case stop(VmStopReason)
}

/// How many instructions of each kind were emulated, and how many faults the emulation raised. Shared by
/// every vCPU thread; updated once per emulated instruction (a cold path: each one costs a VM exit).
public final class EmulationCounters: Sendable {
    private let counts = Mutex<[Int]>(Array(repeating: 0, count: EmulatedInstruction.allCases.count))
    private let faultCount = Atomic<Int>(0)

    public init() {}

    func record(_ outcome: EmulationOutcome) {
        switch outcome {
        case .emulated(let kind): counts.withLock { $0[kind.rawValue] += 1 }
        case .faulted: faultCount.add(1, ordering: .relaxed)
        case .stop: break
        }
    }

    /// Instructions emulated so far, by kind (kinds never seen are absent).
    public var emulated: [EmulatedInstruction: Int] {
        let snapshot = counts.withLock { $0 }
        var result: [EmulatedInstruction: Int] = [:]
        for kind in EmulatedInstruction.allCases where snapshot[kind.rawValue] > 0 { result[kind] = snapshot[kind.rawValue] }
        return result
    }

    /// Exceptions injected because an emulated instruction faulted.
    public var faults: Int { faultCount.load(ordering: .relaxed) }

    /// "popcnt 12, cmpxchg16b 3, int3 1; 0 faults" (for `-v` logging at exit).
    public var summary: String {
        let counts = emulated
        let kinds = EmulatedInstruction.allCases.compactMap { kind in counts[kind].map { "\(kind) \($0)" } }
        return (kinds.isEmpty ? "none" : kinds.joined(separator: ", ")) + "; \(faults) faults"
    }
}

/// Host compatibility mode's instruction emulator: on a `KVM_EXIT_INTERNAL_ERROR` with suberror
/// `KVM_INTERNAL_ERROR_EMULATION`, decodes the instruction at RIP and, if it is one the host's emulator
/// rejects and ActorVMM handles (``EmulatedInstruction``), carries it out on the stopped vCPU, so the vCPU
/// loop can re-enter `KVM_RUN`. Anything else stops the VM with one line naming the bytes — never a guess.
public final class InstructionEmulator: Sendable {
    public let memory: GuestMemory
    public let counters = EmulationCounters()
    /// Bytes of the vCPU's XSAVE area as KVM exchanges it (`KVM_CAP_XSAVE2`, at least 4096).
    let xsaveSize: Int

    public init(memory: GuestMemory, xsaveSize: Int = 4096) {
        self.memory = memory
        self.xsaveSize = max(4096, xsaveSize)
    }

    /// An emulator for `vm`'s vCPUs.
    public convenience init(vm: Vm) {
        self.init(memory: vm.memory, xsaveSize: Int(vm.checkExtension(KVM_CAP_XSAVE2)))
    }

    /// True when the exit in `run` is the host emulator giving up (`KVM_EXIT_INTERNAL_ERROR`, suberror 1).
    static func isEmulationFailure(_ run: UnsafeMutablePointer<kvm_run>) -> Bool {
        Int32(run.pointee.exit_reason) == KVM_EXIT_INTERNAL_ERROR
            && Int32(run.pointee.internal.suberror) == KVM_INTERNAL_ERROR_EMULATION
    }

    /// Handles the emulation failure `vcpu` just exited with.
    func handleEmulationFailure(on vcpu: Vcpu) -> VcpuEmulation {
        var reported = [UInt8](repeating: 0, count: 15)
        let count = Int(ckvm_emulation_failure_bytes(vcpu.run, &reported))
        let outcome = emulate(on: KvmEmulatedCpu(vcpu: vcpu, memory: memory, xsaveSize: xsaveSize),
                              reportedBytes: Array(reported.prefix(count)))
        if Log.enabled(.debug) { Log.debug("vcpu\(vcpu.id): \(outcome)") }
        if case .stop(let reason) = outcome { return .stop(reason) }
        return .resume
    }

    /// Emulates the instruction at RIP. `reportedBytes` are the bytes KVM's exit carried (possibly none);
    /// when they do not hold a whole instruction, the bytes are fetched through the guest's page tables.
    public func emulate(on cpu: some EmulatedCpu, reportedBytes: [UInt8] = []) -> EmulationOutcome {
        let outcome: EmulationOutcome
        do {
            outcome = try emulateOrThrow(on: cpu, reportedBytes: reportedBytes)
        } catch {
            outcome = .stop(.hostError("instruction emulation: \(error)"))
        }
        counters.record(outcome)
        return outcome
    }

    private func emulateOrThrow(on cpu: some EmulatedCpu, reportedBytes: [UInt8]) throws(KvmError) -> EmulationOutcome {
        let registers = try cpu.registers()
        let control = try cpu.controlState()
        let rip = registers.rip
        func unhandled(_ bytes: [UInt8], _ mnemonic: String?, _ detail: String?) -> EmulationOutcome {
            .stop(.unhandledInstruction(rip: rip, bytes: bytes, mnemonic: mnemonic, detail: detail))
        }
        guard control.longMode, control.efer & GuestControlState.eferLma != 0 else {
            return unhandled(reportedBytes, nil, "the vCPU is not in 64-bit mode")
        }

        var bytes = reportedBytes
        var decoded: Result<DecodedInstruction, DecodeError> = decodeResult(bytes)
        if bytes.isEmpty || decoded == .failure(.truncated) {
            guard let fetched = try fetchInstruction(cpu, at: rip, control: control) else {
                return unhandled(bytes, nil, "RIP is not mapped to guest RAM")
            }
            bytes = fetched
            decoded = decodeResult(bytes)
        }
        let instruction: DecodedInstruction
        switch decoded {
        case .success(let value): instruction = value
        case .failure(.truncated): return unhandled(bytes, nil, "the instruction runs into an unmapped page")
        case .failure(let error): return unhandled(bytes, nil, error.description)
        }
        guard control.cpl == 0 else {
            return unhandled(instruction.bytes, instruction.mnemonic?.rawValue, "at CPL \(control.cpl)")
        }

        var context = EmulationContext(cpu: cpu, registers: registers, control: control, instruction: instruction)
        let kind: EmulatedInstruction
        let result: HandlerResult
        switch instruction.mnemonic {
        case .int3: (kind, result) = (.int3, context.int3())
        case .clac: (kind, result) = (.clac, context.setAlignmentCheck(false))
        case .stac: (kind, result) = (.stac, context.setAlignmentCheck(true))
        case .popcnt: (kind, result) = (.popcnt, try context.popcnt())
        case .fwait: (kind, result) = (.fwait, try context.fwait())
        case .ldmxcsr: (kind, result) = (.ldmxcsr, try context.ldmxcsr())
        case .stmxcsr: (kind, result) = (.stmxcsr, try context.stmxcsr())
        case .cmpxchg16b: (kind, result) = (.cmpxchg16b, try context.cmpxchg16b())
        case .lsl: (kind, result) = (.lsl, try context.segmentCheck(.lsl))
        case .lar: (kind, result) = (.lar, try context.segmentCheck(.lar))
        case .verr: (kind, result) = (.verr, try context.segmentCheck(.verr))
        case .verw: (kind, result) = (.verw, try context.segmentCheck(.verw))
        default: return unhandled(instruction.bytes, instruction.mnemonic?.rawValue, nil)
        }

        switch result {
        case .completed:
            try cpu.setRegisters(context.registers)
            return .emulated(kind)
        case .trap(let exception):
            try cpu.setRegisters(context.registers)
            try cpu.inject(exception)
            return .emulated(kind)
        case .fault(let exception):
            try cpu.inject(exception)
            return .faulted(kind, exception)
        case .unhandled(let detail):
            return unhandled(instruction.bytes, instruction.mnemonic?.rawValue, detail)
        }
    }

    private func decodeResult(_ bytes: [UInt8]) -> Result<DecodedInstruction, DecodeError> {
        do { return .success(try X86Decoder.decode(bytes)) } catch { return .failure(error) }
    }

    /// Up to 15 bytes at `rip`: the rest of RIP's page, then, if the instruction may continue, the start of
    /// the next page when that one is mapped too. Nil when RIP itself is not mapped to RAM.
    private func fetchInstruction(_ cpu: some EmulatedCpu, at rip: UInt64,
                                  control: GuestControlState) throws(KvmError) -> [UInt8]? {
        guard control.isCanonical(rip), let physical = try cpu.translate(rip) else { return nil }
        let inPage = min(X86Decoder.maximumLength, Int(4096 - (rip & 0xFFF)))
        guard var bytes = try? cpu.memory.readBytes(at: GuestAddress(physical), count: inPage) else { return nil }
        let next = rip &+ UInt64(inPage)
        if inPage < X86Decoder.maximumLength, control.isCanonical(next), let second = try cpu.translate(next),
           let more = try? cpu.memory.readBytes(at: GuestAddress(second), count: X86Decoder.maximumLength - inPage) {
            bytes += more
        }
        return bytes
    }
}

extension EmulationOutcome: CustomStringConvertible {
    public var description: String {
        switch self {
        case .emulated(let kind): "emulated \(kind)"
        case .faulted(let kind, let exception): "\(kind.map { "\($0)" } ?? "instruction") raised \(exception)"
        case .stop(let reason): "stop: \(reason)"
        }
    }
}
