@testable import ActorVmm
import CKvm
import Glibc
import Testing

/// Emulates `hex` placed at `rip` on a fake vCPU prepared by `setup`; the bytes are fetched through the
/// fake's page map unless `reported` gives the bytes KVM's exit would carry.
func emulate(_ hex: String, at rip: UInt64 = 0x1000, reported: [UInt8] = [],
             _ setup: (FakeEmulatedCpu) throws -> Void = { _ in }) throws -> (FakeEmulatedCpu, EmulationOutcome) {
    let cpu = try FakeEmulatedCpu()
    try setup(cpu)
    try cpu.load(bytes(hex), at: rip)
    let emulator = InstructionEmulator(memory: cpu.memory)
    return (cpu, emulator.emulate(on: cpu, reportedBytes: reported))
}

@Suite struct InstructionEmulatorTests {
    // MARK: int3, clac, stac

    @Test func int3InjectsBreakpointAfterTheInstruction() throws {
        let (cpu, outcome) = try emulate("cc")
        #expect(outcome == .emulated(.int3))
        #expect(cpu.regs.rip == 0x1001, "#BP is a trap: the handler sees the next RIP")
        #expect(cpu.injected == [.breakpoint])
    }

    @Test func reportedBytesAreUsedWhenTheyHoldTheInstruction() throws {
        // Memory at RIP holds 00 00 (add [rax], al); the exit said cc.
        let (cpu, outcome) = try emulate("00 00", reported: [0xCC, 0x00, 0x00])
        #expect(outcome == .emulated(.int3) && cpu.regs.rip == 0x1001)
    }

    @Test func clacAndStacChangeOnlyAlignmentCheckAndRip() throws {
        let (clac, clacOutcome) = try emulate("0f 01 ca") { $0.regs.rflags = 0x40246 }
        #expect(clacOutcome == .emulated(.clac) && clac.regs.rflags == 0x246 && clac.regs.rip == 0x1003)
        let (stac, stacOutcome) = try emulate("0f 01 cb") { $0.regs.rflags = 0x246 }
        #expect(stacOutcome == .emulated(.stac) && stac.regs.rflags == 0x40246 && stac.regs.rip == 0x1003)
        #expect(stac.injected.isEmpty)
    }

    @Test func lockPrefixIsInvalidOpcode() throws {
        for hex in ["f0 0f 01 ca", "f0 f3 48 0f b8 cb", "f0 cc", "f0 9b", "f0 0f ae 17"] {
            let (cpu, outcome) = try emulate(hex) { $0.regs[.rdi] = 0x2000 }
            guard case .faulted(_, let exception) = outcome else { Issue.record("\(hex): \(outcome)"); continue }
            #expect(exception == .invalidOpcode, "\(hex)")
            #expect(cpu.regs.rip == 0x1000 && cpu.registerWrites == 0, "a fault changes nothing but the exception")
        }
    }

    // MARK: popcnt

    @Test func popcntRegisterForms() throws {
        let (wide, outcome) = try emulate("f3 48 0f b8 cb") {
            $0.regs[.rbx] = 0xF0F0_0000_0000_0001
            $0.regs.rflags = 0x2 | Rflags.status
        }
        #expect(outcome == .emulated(.popcnt))
        #expect(wide.regs[.rcx] == 9 && wide.regs.rip == 0x1005)
        #expect(wide.regs.rflags == 0x2, "CF, PF, AF, ZF, SF and OF are cleared; ZF stays clear for a non-zero source")

        let (narrow, _) = try emulate("f3 0f b8 cb") { $0.regs[.rbx] = 0xFFFF_0000_FFFF_FFFF; $0.regs[.rcx] = ~0 }
        #expect(narrow.regs[.rcx] == 32, "32-bit: upper source bits ignored, result zero-extended")

        let (half, _) = try emulate("66 f3 0f b8 cb") { $0.regs[.rbx] = 0x1234_0000_0000_FFFF; $0.regs[.rcx] = 0xAAAA_BBBB_CCCC_DDDD }
        #expect(half.regs[.rcx] == 0xAAAA_BBBB_CCCC_0010, "16-bit: bits 16-63 of the destination are kept")

        let (high, _) = try emulate("f3 4d 0f b8 c7") { $0.regs[.r15] = 0x8000_0000_0000_0000 }
        #expect(high.regs[.r8] == 1, "REX.R and REX.B reach r8-r15")
    }

    @Test func popcntOfZeroSetsZeroFlag() throws {
        let (cpu, _) = try emulate("f3 48 0f b8 cb") { $0.regs[.rbx] = 0; $0.regs[.rcx] = 77; $0.regs.rflags = 0x2 | Rflags.carry }
        #expect(cpu.regs[.rcx] == 0 && cpu.regs.rflags == 0x2 | Rflags.zero)
    }

    @Test func popcntMemoryForms() throws {
        let (plain, _) = try emulate("f3 4c 0f b8 08") {  // popcnt (%rax),%r9
            $0.regs[.rax] = 0x2000
            try $0.memory.write(UInt64(0x0F0F), at: GuestAddress(0x2000))
        }
        #expect(plain.regs[.r9] == 8)
        let (rip, _) = try emulate("f3 4c 0f b8 3d f7 0f 00 00") {  // popcnt 0xff7(%rip),%r15: 0x1009 + 0xff7
            try $0.memory.write(UInt64.max, at: GuestAddress(0x2000))
        }
        #expect(rip.regs[.r15] == 64)
        let (gs, _) = try emulate("65 f3 48 0f b8 04 25 28 00 00 00") {  // popcnt %gs:0x28,%rax
            $0.control.gsBase = 0x2FD8
            try $0.memory.write(UInt64(7), at: GuestAddress(0x3000))
        }
        #expect(gs.regs[.rax] == 3 && gs.regs.rip == 0x100B)
        let (sib, _) = try emulate("f3 4a 0f b8 14 e5 40 00 00 00") {  // popcnt 0x40(,%r12,8),%rdx
            $0.regs[.r12] = 0x400
            try $0.memory.write(UInt64(0b1011), at: GuestAddress(0x2040))
        }
        #expect(sib.regs[.rdx] == 3)
    }

    @Test func popcntOperandAcrossTwoPagesMappedApart() throws {
        let (cpu, outcome) = try emulate("f3 48 0f b8 08") {
            $0.pages[0x400] = 0x10; $0.pages[0x401] = 0x20
            $0.regs[.rax] = 0x40_0FFC
            try $0.memory.write(UInt32.max, at: GuestAddress(0x10FFC))
            try $0.memory.write(UInt32(1), at: GuestAddress(0x20000))
        }
        #expect(outcome == .emulated(.popcnt) && cpu.regs[.rcx] == 33)
    }

    @Test func popcntFaults() throws {
        let (unmapped, pageFault) = try emulate("f3 48 0f b8 08") { $0.regs[.rax] = 0x40_0000 }
        #expect(pageFault == .faulted(.popcnt, .pageFault(at: 0x40_0000, write: false)))
        #expect(unmapped.injected == [GuestException(vector: 14, errorCode: 0, pageFaultAddress: 0x40_0000)])
        #expect(unmapped.regs.rip == 0x1000)
        let (_, general) = try emulate("f3 48 0f b8 08") { $0.regs[.rax] = 0x0000_8000_0000_0000 }
        #expect(general == .faulted(.popcnt, .generalProtection), "non-canonical")
        let (_, stack) = try emulate("f3 48 0f b8 44 24 10") { $0.regs[.rsp] = 0x0000_7FFF_FFFF_FFF8 }
        #expect(stack == .faulted(.popcnt, .stackFault), "non-canonical through RSP is #SS")
        let (_, la57) = try emulate("f3 48 0f b8 08") {
            $0.regs[.rax] = 0x0000_8000_0000_0000
            $0.control.cr4 |= GuestControlState.cr4La57
            $0.pages[0x8_0000_0000] = 0x30
        }
        #expect(la57 == .emulated(.popcnt), "canonical with 5-level paging")
    }

    // MARK: fwait

    @Test func fwaitSkipsWhenNothingIsPending() throws {
        let (cpu, outcome) = try emulate("9b") { $0.fpu.fsw = 0x0001; $0.fpu.fcw = 0x037F }  // IE flagged but masked
        #expect(outcome == .emulated(.fwait) && cpu.regs.rip == 0x1001)
    }

    @Test func fwaitStopsOnAPendingUnmaskedException() throws {
        let (_, outcome) = try emulate("9b") { $0.fpu.fsw = 0x0081; $0.fpu.fcw = 0x037E }
        guard case .stop(let reason) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason.description == "unhandled instruction at RIP 0x1000 (bytes 9b, mnemonic fwait): an unmasked x87 "
                + "exception is pending (FSW 0x81, FCW 0x37e); #MF is not emulated")
        #expect(reason.exitCode == 1)
    }

    @Test func fwaitRaisesDeviceNotAvailableWithMonitorAndTaskSwitched() throws {
        let (_, outcome) = try emulate("9b") { $0.control.cr0 |= GuestControlState.cr0TaskSwitched }
        #expect(outcome == .faulted(.fwait, .deviceNotAvailable))
        let (_, tsOnly) = try emulate("9b") {
            $0.control.cr0 = ($0.control.cr0 | GuestControlState.cr0TaskSwitched) & ~GuestControlState.cr0MonitorCoprocessor
        }
        #expect(tsOnly == .emulated(.fwait), "TS without MP does not fault fwait")
    }

    // MARK: ldmxcsr, stmxcsr

    @Test func ldmxcsrLoadsAndChecksReservedBits() throws {
        let (cpu, outcome) = try emulate("0f ae 17") { $0.regs[.rdi] = 0x2000; try $0.memory.write(UInt32(0x7F80), at: GuestAddress(0x2000)) }
        #expect(outcome == .emulated(.ldmxcsr) && cpu.fpu.mxcsr == 0x7F80 && cpu.regs.rip == 0x1003)

        let (reserved, fault) = try emulate("0f ae 17") { $0.regs[.rdi] = 0x2000; try $0.memory.write(UInt32(0x1_1F80), at: GuestAddress(0x2000)) }
        #expect(fault == .faulted(.ldmxcsr, .generalProtection) && reserved.fpu.mxcsr == 0x1F80 && reserved.regs.rip == 0x1000)

        let (amd, _) = try emulate("0f ae 17") {  // this host's mask 0x2FFFF has MM (bit 17)
            $0.fpu.mxcsrMask = 0x2_FFFF
            $0.regs[.rdi] = 0x2000; try $0.memory.write(UInt32(0x2_1F80), at: GuestAddress(0x2000))
        }
        #expect(amd.fpu.mxcsr == 0x2_1F80)

        let (_, noDaz) = try emulate("0f ae 17") {  // a zero mask means 0xFFBF: DAZ (bit 6) is reserved
            $0.fpu.mxcsrMask = 0
            $0.regs[.rdi] = 0x2000; try $0.memory.write(UInt32(0x1FC0), at: GuestAddress(0x2000))
        }
        #expect(noDaz == .faulted(.ldmxcsr, .generalProtection))
    }

    @Test func sseStateInstructionsCheckCr0AndCr4() throws {
        for hex in ["0f ae 17", "0f ae 1f"] {
            let (_, ts) = try emulate(hex) { $0.regs[.rdi] = 0x2000; $0.control.cr0 |= GuestControlState.cr0TaskSwitched }
            #expect(ts.faultVector == 7, "\(hex): #NM with CR0.TS")
            let (_, em) = try emulate(hex) { $0.regs[.rdi] = 0x2000; $0.control.cr0 |= GuestControlState.cr0Emulation }
            #expect(em.faultVector == 6, "\(hex): #UD with CR0.EM")
            let (_, osfxsr) = try emulate(hex) { $0.regs[.rdi] = 0x2000; $0.control.cr4 &= ~GuestControlState.cr4Osfxsr }
            #expect(osfxsr.faultVector == 6, "\(hex): #UD without CR4.OSFXSR")
        }
    }

    @Test func stmxcsrStores() throws {
        let (cpu, outcome) = try emulate("0f ae 5d f8") { $0.regs[.rbp] = 0x3008; $0.fpu.mxcsr = 0x1FA0 }  // stmxcsr -8(%rbp)
        #expect(outcome == .emulated(.stmxcsr) && cpu.regs.rip == 0x1004)
        #expect(try cpu.memory.read(UInt32.self, at: GuestAddress(0x3000)) == 0x1FA0)
    }

    @Test func stmxcsrAcrossPagesWritesBothOrNeither() throws {
        let (split, _) = try emulate("0f ae 18") {  // stmxcsr (%rax)
            $0.pages[0x400] = 0x10; $0.pages[0x401] = 0x20
            $0.regs[.rax] = 0x40_0FFE; $0.fpu.mxcsr = 0xAABB_CCDD
        }
        #expect(try split.memory.readBytes(at: GuestAddress(0x10FFE), count: 2) == [0xDD, 0xCC])
        #expect(try split.memory.readBytes(at: GuestAddress(0x20000), count: 2) == [0xBB, 0xAA])

        let (half, outcome) = try emulate("0f ae 18") {
            $0.pages[0x400] = 0x10
            $0.regs[.rax] = 0x40_0FFE; $0.fpu.mxcsr = 0xAABB_CCDD
        }
        #expect(outcome == .faulted(.stmxcsr, .pageFault(at: 0x40_1000, write: true)))
        #expect(try half.memory.readBytes(at: GuestAddress(0x10FFE), count: 2) == [0, 0], "nothing written before the fault")
    }

    // MARK: cmpxchg16b

    @Test func cmpxchg16bExchangesWhenEqual() throws {
        let (cpu, outcome) = try emulate("48 0f c7 0e") {
            $0.regs[.rsi] = 0x2000
            $0.regs[.rax] = 1; $0.regs[.rdx] = 2; $0.regs[.rbx] = 3; $0.regs[.rcx] = 4
            try $0.memory.write(UInt64(1), at: GuestAddress(0x2000)); try $0.memory.write(UInt64(2), at: GuestAddress(0x2008))
        }
        #expect(outcome == .emulated(.cmpxchg16b) && cpu.regs.rip == 0x1004)
        #expect(cpu.regs.rflags & Rflags.zero != 0)
        #expect(try cpu.memory.read(UInt64.self, at: GuestAddress(0x2000)) == 3)
        #expect(try cpu.memory.read(UInt64.self, at: GuestAddress(0x2008)) == 4)
    }

    @Test func cmpxchg16bLoadsWhenDifferent() throws {
        let (cpu, _) = try emulate("f0 48 0f c7 4c 4f 20") {  // lock cmpxchg16b 0x20(%rdi,%rcx,2)
            $0.regs[.rdi] = 0x2000; $0.regs[.rcx] = 8
            $0.regs[.rax] = 1; $0.regs[.rdx] = 2; $0.regs[.rbx] = 3; $0.regs.rflags = 0x2 | Rflags.zero
            try $0.memory.write(UInt64(5), at: GuestAddress(0x2030)); try $0.memory.write(UInt64(6), at: GuestAddress(0x2038))
        }
        #expect(cpu.regs[.rax] == 5 && cpu.regs[.rdx] == 6 && cpu.regs.rflags == 0x2)
        #expect(try cpu.memory.read(UInt64.self, at: GuestAddress(0x2030)) == 5, "memory unchanged")
        #expect(cpu.regs.rip == 0x1007)
    }

    @Test func cmpxchg16bFaults() throws {
        let (_, misaligned) = try emulate("48 0f c7 0e") { $0.regs[.rsi] = 0x2008 }
        #expect(misaligned == .faulted(.cmpxchg16b, .generalProtection))
        let (_, unmapped) = try emulate("48 0f c7 0e") { $0.regs[.rsi] = 0x40_0000 }
        #expect(unmapped == .faulted(.cmpxchg16b, .pageFault(at: 0x40_0000, write: true)))
        let (_, mmio) = try emulate("48 0f c7 0e") { $0.regs[.rsi] = 0x40_0000; $0.pages[0x400] = 0xFEE00 }
        #expect(mmio.stopDescription?.hasSuffix("the operand at physical 0xfee00000 is not RAM") == true)
    }

    // MARK: what is not emulated

    @Test func unknownInstructionsStopWithOneLine() throws {
        let (_, ud2) = try emulate("0f 0b")
        #expect(ud2 == .stop(.unhandledInstruction(rip: 0x1000, bytes: [0x0F, 0x0B], mnemonic: "ud2", detail: nil)))
        #expect(ud2.stopDescription == "unhandled instruction at RIP 0x1000 (bytes 0f 0b, mnemonic ud2)")
        #expect(try emulate("0f ae 2f").1.stopDescription == "unhandled instruction at RIP 0x1000 (bytes 0f ae 2f, mnemonic xrstor)")
        #expect(try emulate("c5 f8 ae 10").1.stopDescription == "unhandled instruction at RIP 0x1000 (bytes c5 f8 ae 10, mnemonic vldmxcsr)")
        #expect(try emulate("48 89 c3").1.stopDescription == "unhandled instruction at RIP 0x1000 (bytes 48 89 c3, mnemonic unknown)")
        #expect(try emulate("06", reported: [0x06]).1.stopDescription
                == "unhandled instruction at RIP 0x1000 (bytes 06, mnemonic unknown): invalid opcode in 64-bit mode")
    }

    @Test func fetchesAcrossAPageBoundary() throws {
        let (cpu, outcome) = try emulate("f3 48 0f b8 cb", at: 0x40_0FFE) {
            $0.pages[0x400] = 0x10; $0.pages[0x401] = 0x20
            $0.regs[.rbx] = 3
        }
        #expect(outcome == .emulated(.popcnt) && cpu.regs[.rcx] == 2 && cpu.regs.rip == 0x40_1003)
        let (_, truncatedReport) = try emulate("f3 48 0f b8 cb", reported: [0xF3, 0x48]) { $0.regs[.rbx] = 1 }
        #expect(truncatedReport == .emulated(.popcnt), "a report too short for the instruction is completed from memory")
    }

    @Test func stopsWhenTheInstructionCannotBeFetched() throws {
        let (_, unmapped) = try emulate("cc", at: 0x40_0000)
        #expect(unmapped.stopDescription == "unhandled instruction at RIP 0x400000 (bytes unavailable, mnemonic unknown): RIP is not mapped to guest RAM")
        let (_, half) = try emulate("f3 48 0f b8 cb", at: 0x40_0FFE) { $0.pages[0x400] = 0x10 }
        #expect(half.stopDescription == "unhandled instruction at RIP 0x400ffe (bytes f3 48, mnemonic unknown): the instruction runs into an unmapped page")
    }

    @Test func onlyRing0LongModeIsEmulated() throws {
        let (_, user) = try emulate("cc") { $0.control.cpl = 3 }
        #expect(user.stopDescription == "unhandled instruction at RIP 0x1000 (bytes cc, mnemonic int3): at CPL 3")
        let (_, compat) = try emulate("cc") { $0.control.longMode = false }
        #expect(compat.stopDescription?.hasSuffix("the vCPU is not in 64-bit mode") == true)
    }

    @Test func countersCountEachKind() throws {
        let cpu = try FakeEmulatedCpu()
        let emulator = InstructionEmulator(memory: cpu.memory)
        for hex in ["cc", "f3 48 0f b8 cb", "f3 48 0f b8 cb", "48 0f c7 0e"] {
            try cpu.load(bytes(hex), at: 0x1000)
            cpu.regs[.rsi] = 0x2008  // misaligned: the cmpxchg16b faults
            _ = emulator.emulate(on: cpu)
        }
        #expect(emulator.counters.emulated == [.int3: 1, .popcnt: 2])
        #expect(emulator.counters.faults == 1)
        #expect(emulator.counters.summary == "int3 1, popcnt 2; 1 faults")
        #expect(InstructionEmulator(memory: cpu.memory).counters.summary == "none; 0 faults")
    }
}

@Suite struct EmulationFailureExitTests {
    /// The exit's `emulation_failure` overlay: flags in data[0], then insn_size and 15 instruction bytes.
    @Test func instructionBytesComeFromTheExit() {
        let run = UnsafeMutablePointer<kvm_run>.allocate(capacity: 1)
        defer { run.deallocate() }
        run.initialize(to: kvm_run())
        run.pointee.exit_reason = UInt32(KVM_EXIT_INTERNAL_ERROR)
        run.pointee.internal.suberror = UInt32(KVM_INTERNAL_ERROR_EMULATION)
        run.pointee.internal.ndata = 3
        run.pointee.internal.data.0 = 1  // KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
        run.pointee.internal.data.1 = 5 | 0xF3 << 8 | 0x48 << 16 | 0x0F << 24 | 0xB8 << 32 | 0xCB << 40
        #expect(InstructionEmulator.isEmulationFailure(run))
        var out = [UInt8](repeating: 0, count: 15)
        #expect(ckvm_emulation_failure_bytes(run, &out) == 5)
        #expect(Array(out.prefix(5)) == [0xF3, 0x48, 0x0F, 0xB8, 0xCB])

        run.pointee.internal.data.0 = 0  // no bytes reported
        #expect(ckvm_emulation_failure_bytes(run, &out) == 0)
        run.pointee.internal.data.0 = 1
        run.pointee.internal.ndata = 2  // too short to hold them
        #expect(ckvm_emulation_failure_bytes(run, &out) == 0)
        run.pointee.internal.suberror = 2  // KVM_INTERNAL_ERROR_SIMUL_EX: not an emulation failure
        #expect(!InstructionEmulator.isEmulationFailure(run))
        #expect(ckvm_emulation_failure_bytes(run, &out) == 0)
    }
}

extension EmulationOutcome {
    var faultVector: UInt8? { if case .faulted(_, let exception) = self { exception.vector } else { nil } }
    var stopDescription: String? { if case .stop(let reason) = self { reason.description } else { nil } }
}

@Suite struct CompareExchange128Tests {
    @Test func exchangesComparesAndRefuses() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x1000)])
        try memory.write(UInt64(1), at: GuestAddress(0x100)); try memory.write(UInt64(2), at: GuestAddress(0x108))
        let first = try memory.compareExchange128(at: GuestAddress(0x100), expected: (1, 2), desired: (3, 4))
        #expect(first.exchanged && first.found == (1, 2))
        let second = try memory.compareExchange128(at: GuestAddress(0x100), expected: (1, 2), desired: (5, 6))
        #expect(!second.exchanged && second.found == (3, 4))
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x108)) == 4)
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0x108), count: 16)) {
            _ = try memory.compareExchange128(at: GuestAddress(0x108), expected: (0, 0), desired: (0, 0))
        }
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0x1000), count: 16)) {
            _ = try memory.compareExchange128(at: GuestAddress(0x1000), expected: (0, 0), desired: (0, 0))
        }
    }
}

@Suite struct HostCompatibilityTests {
    /// A scratch folder with `modules/<names>` and a cpuinfo whose flags line is `flags`.
    func host(modules: [String], flags: String) -> (modules: String, cpuinfo: String) {
        var template = Array("/tmp/actorvmm-compat-XXXXXX".utf8CString)
        let root = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        mkdir(root + "/modules", 0o755)
        for name in modules { mkdir(root + "/modules/" + name, 0o755) }
        let fd = open(root + "/cpuinfo", O_WRONLY | O_CREAT, 0o644)
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: \(flags)\n"
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        return (root + "/modules", root + "/cpuinfo")
    }

    @Test func detection() {
        let pvm = host(modules: ["kvm", "kvm_pvm"], flags: "fpu cx16 popcnt hypervisor")
        #expect(HostCompatibility.detect(modules: pvm.modules, cpuinfo: pvm.cpuinfo))
        let intel = host(modules: ["kvm", "kvm_intel"], flags: "fpu vmx cx16")
        #expect(!HostCompatibility.detect(modules: intel.modules, cpuinfo: intel.cpuinfo))
        let amd = host(modules: ["kvm", "kvm_amd"], flags: "fpu svm")
        #expect(!HostCompatibility.detect(modules: amd.modules, cpuinfo: amd.cpuinfo))
        let softwareOnly = host(modules: ["kvm"], flags: "fpu cx16 hypervisor")
        #expect(HostCompatibility.detect(modules: softwareOnly.modules, cpuinfo: softwareOnly.cpuinfo))
        let hardware = host(modules: ["kvm"], flags: "fpu vmx")
        #expect(!HostCompatibility.detect(modules: hardware.modules, cpuinfo: hardware.cpuinfo))
        #expect(!HostCompatibility.detect(modules: "/nonexistent", cpuinfo: "/nonexistent"))
    }

    @Test func thisHostIsDetectedAsItIs() {
        var status = stat()
        #expect(HostCompatibility.detected().isNeeded == (stat("/sys/module/kvm_pvm", &status) == 0) || !Kvm.isAvailable)
    }

    @Test func commandLineAndPit() {
        let on = HostCompatibility(isNeeded: true), off = HostCompatibility(isNeeded: false)
        #expect(on.commandLineAdditions.joined(separator: " ") == "noxsave clearcpuid=cx16,smap,popcnt,erms,fsrm,ssse3,"
                + "sse4_1,sse4_2,avx,avx2,aes,pclmulqdq,bmi1,bmi2,adx,sha_ni cryptomgr.notests=1 init_on_alloc=0 "
                + "initcall_blacklist=trace_eval_init,ftrace_check_for_weak_functions,load_system_certificate_list")
        #expect(off.commandLineAdditions.isEmpty)
        #expect(!on.wantsPit && off.wantsPit)
    }

    /// KVM's PV_UNHALT, PV_SEND_IPI and PV_SCHED_YIELD are hidden in compatibility mode (their hypercall
    /// hangs the vCPU on this host); every other bit and leaf is left alone, and nothing changes when off.
    @Test func hypercallFeaturesAreHiddenOnlyInCompatibilityMode() {
        var features = kvm_cpuid_entry2()
        features.function = 0x4000_0001
        features.eax = 0x0100_7EFB  // what KVM reports on this project's host
        var one = kvm_cpuid_entry2()
        one.function = 1
        one.eax = 0xFFFF_FFFF
        let on = HostCompatibility(isNeeded: true).adjustedCPUID([one, features])
        #expect(on[0].eax == 0xFFFF_FFFF)
        #expect(on[1].eax == 0x0100_7EFB & ~UInt32((1 << 7) | (1 << 11) | (1 << 13)))
        #expect(on[1].eax & (1 << 3) != 0, "the kvm-clock bit stays")
        let off = HostCompatibility(isNeeded: false).adjustedCPUID([one, features])
        #expect(off[1].eax == 0x0100_7EFB)
    }
}
