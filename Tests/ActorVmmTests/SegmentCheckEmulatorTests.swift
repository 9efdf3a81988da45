@testable import ActorVmm
import Testing

/// `lsl`, `lar`, `verr` and `verw` on the fake vCPU: the GDT at 0x3000 (identity-mapped) holds the
/// descriptors Linux 6.1 has, among them its per-CPU "CPUNODE" entry 15 whose limit is the CPU and node number.
@Suite struct SegmentCheckEmulatorTests {
    static let gdtBase: UInt64 = 0x3000, ldtBase: UInt64 = 0x5000

    /// A segment descriptor: `type` (4 bits), S (`system == false`), DPL, P, the 20-bit limit, D/B and G.
    static func descriptor(type: UInt64, system: Bool = false, dpl: UInt64 = 0, present: Bool = true,
                           limit: UInt64 = 0xFFFFF, big: Bool = false, granular: Bool = false, long: Bool = false) -> UInt64 {
        var d = limit & 0xFFFF | (limit >> 16 & 0xF) << 48
        d |= type << 40 | (system ? 0 : 1) << 44 | dpl << 45 | (present ? 1 : 0) << 47
        d |= (long ? 1 : 0) << 53 | (big ? 1 : 0) << 54 | (granular ? 1 : 0) << 55
        return d
    }

    /// Linux's GDT (arch/x86/include/asm/segment.h): kernel CS 0x10, kernel DS 0x18, user CS 0x33, user DS
    /// 0x2b, the TSS at 0x40 (16 bytes), CPUNODE at 0x78 (cpu 3, node 1 → limit 0x1003), and extras.
    static let gdt: [Int: UInt64] = [
        2: descriptor(type: 0xB, granular: true, long: true),              // __KERNEL_CS: code, readable
        3: descriptor(type: 0x3, big: true, granular: true),               // __KERNEL_DS: data, writable
        5: descriptor(type: 0x3, dpl: 3, big: true, granular: true),       // __USER_DS
        6: descriptor(type: 0xB, dpl: 3, granular: true, long: true),      // __USER_CS
        8: descriptor(type: 0xB, system: true, limit: 0x4087),             // TSS (busy, 64-bit), low half
        10: descriptor(type: 0x8),                                         // execute-only code, DPL 0
        11: descriptor(type: 0xE, system: true),                           // 64-bit interrupt gate
        12: descriptor(type: 0xC, system: true, dpl: 3),                   // 64-bit call gate
        13: descriptor(type: 0xF, dpl: 0),                                 // conforming readable code, DPL 0
        14: descriptor(type: 0x1, dpl: 0, present: false, limit: 0x1234),  // data, read-only, not present
        15: descriptor(type: 0x5, dpl: 3, limit: 0x1003, big: true),       // CPUNODE: RO data expand-down
    ]

    func run(_ hex: String, ldt: Bool = false, _ setup: (FakeEmulatedCpu) throws -> Void = { _ in }) throws -> (FakeEmulatedCpu, EmulationOutcome) {
        try emulate(hex) { cpu in
            for (index, value) in Self.gdt { try cpu.memory.write(value, at: GuestAddress(Self.gdtBase + UInt64(index * 8))) }
            cpu.control.gdt = DescriptorTable(base: Self.gdtBase, limit: 16 * 8 - 1)
            if ldt {
                try cpu.memory.write(Self.descriptor(type: 0x3, dpl: 3, limit: 0xABC), at: GuestAddress(Self.ldtBase + 8))
                cpu.control.ldt = DescriptorTable(base: Self.ldtBase, limit: 15)
            }
            cpu.regs.rflags = 0x2 | Rflags.carry | Rflags.sign  // other flags must survive
            try setup(cpu)
        }
    }

    @Test func lslReadsLinuxsCpuNumberFromTheCpuNodeEntry() throws {
        // movq $__CPUNODE_SEG, %rax; lsl %rax, %rax (arch/x86/entry/calling.h)
        let (cpu, outcome) = try run("48 0f 03 c0") { $0.regs[.rax] = 0x7B }
        #expect(outcome == .emulated(.lsl))
        #expect(cpu.regs[.rax] == 0x1003 && cpu.regs[.rax] & 0xFFF == 3, "CPU 3 (node 1)")
        #expect(cpu.regs.rflags == 0x2 | Rflags.carry | Rflags.sign | Rflags.zero, "ZF set, the rest unchanged")
        #expect(cpu.regs.rip == 0x1004 && cpu.injected.isEmpty)
    }

    @Test func lslScalesByGranularityAndWritesByOperandSize() throws {
        let (wide, _) = try run("48 0f 03 c3") { $0.regs[.rbx] = 0x18 }
        #expect(wide.regs[.rax] == 0xFFFF_FFFF, "G: limit << 12 | 0xFFF")
        let (narrow, _) = try run("0f 03 c3") { $0.regs[.rbx] = 0x40; $0.regs[.rax] = 0xDEAD_BEEF_0000_0000 }
        #expect(narrow.regs[.rax] == 0x4087, "a 32-bit destination is zero-extended")
        let (word, _) = try run("66 0f 03 c3") { $0.regs[.rbx] = 0x18; $0.regs[.rax] = 0x1111_2222_3333_4444 }
        #expect(word.regs[.rax] == 0x1111_2222_3333_FFFF, "a 16-bit destination keeps bits 16-63")
        #expect(word.regs.rip == 0x1004)
    }

    @Test func lslTakesTheSelectorFromMemory() throws {
        let (cpu, outcome) = try run("48 0f 03 07") { cpu in
            cpu.regs[.rdi] = 0x2000
            try cpu.memory.write(UInt16(0x7B), at: GuestAddress(0x2000))
        }
        #expect(outcome == .emulated(.lsl) && cpu.regs[.rax] == 0x1003 && cpu.regs.rflags & Rflags.zero != 0)
        let (unmapped, fault) = try run("48 0f 03 07") { $0.regs[.rdi] = 0x20_0000 }
        #expect(fault == .faulted(.lsl, .pageFault(at: 0x20_0000, write: false)))
        #expect(unmapped.regs.rip == 0x1000 && unmapped.registerWrites == 0)
    }

    /// Each case clears ZF and leaves the destination as it was.
    @Test(arguments: [
        (0x0000 as UInt64, "the null selector"),
        (0x0003, "the null selector with RPL 3"),
        (0x0080, "an index past the GDT's limit"),
        (0x000C, "an LDT selector without an LDT"),
        (0x0013, "DPL 0 < RPL 3"),
        (0x0058, "an interrupt gate (not a type lsl accepts)"),
        (0x0048, "the TSS's upper half (type 0)"),
        (0x0060, "a call gate (lar takes it, lsl does not)"),
    ])
    func lslClearsZeroFlagWhenTheDescriptorIsNotVisible(selector: UInt64, why: String) throws {
        let (cpu, outcome) = try run("48 0f 03 c3") { $0.regs[.rbx] = selector; $0.regs[.rax] = 0x5555 }
        #expect(outcome == .emulated(.lsl), "\(why)")
        #expect(cpu.regs.rflags == 0x2 | Rflags.carry | Rflags.sign, "ZF clear: \(why)")
        #expect(cpu.regs[.rax] == 0x5555 && cpu.regs.rip == 0x1004, "\(why)")
    }

    @Test func conformingCodeNotPresentSegmentsAndTheLdtAreVisible() throws {
        let (conforming, _) = try run("0f 03 c3") { $0.regs[.rbx] = 0x6B }  // RPL 3 > DPL 0, but conforming
        #expect(conforming.regs.rflags & Rflags.zero != 0 && conforming.regs[.rax] == 0xFFFFF)
        let (absent, _) = try run("0f 03 c3") { $0.regs[.rbx] = 0x70 }  // P = 0: lsl does not check it
        #expect(absent.regs.rflags & Rflags.zero != 0 && absent.regs[.rax] == 0x1234)
        let (local, _) = try run("0f 03 c3", ldt: true) { $0.regs[.rbx] = 0x0F }  // LDT entry 1, RPL 3
        #expect(local.regs.rflags & Rflags.zero != 0 && local.regs[.rax] == 0xABC)
        let (user, _) = try run("0f 03 c3") { $0.control.cpl = 3; $0.regs[.rbx] = 0x18 }  // DPL 0 < CPL 3
        #expect(user.regs.rflags & Rflags.zero == 0)
    }

    @Test func larLoadsTheAccessRights() throws {
        let (cpu, outcome) = try run("0f 02 c3") { $0.regs[.rbx] = 0x7B }
        #expect(outcome == .emulated(.lar))
        #expect(cpu.regs[.rax] == 0x0040_F500, "D/B, P, DPL 3, S, type 5 (limit bits 16-19 masked)")
        let (word, _) = try run("66 0f 02 c3") { $0.regs[.rbx] = 0x33; $0.regs[.rax] = 0xFFFF_FFFF_FFFF_FFFF }
        #expect(word.regs[.rax] == 0xFFFF_FFFF_FFFF_FB00, "16 bits: the access byte only")
        let (gate, _) = try run("0f 02 c3") { $0.regs[.rbx] = 0x63 }
        #expect(gate.regs.rflags & Rflags.zero != 0 && gate.regs[.rax] == 0xEC00, "a call gate is visible to lar")
        let (interrupt, _) = try run("0f 02 c3") { $0.regs[.rbx] = 0x58; $0.regs[.rax] = 7 }
        #expect(interrupt.regs.rflags & Rflags.zero == 0 && interrupt.regs[.rax] == 7)
    }

    @Test(arguments: [
        ("0f 00 e0", 0x18 as UInt64, true, "verr: data is readable"),
        ("0f 00 e8", 0x18, true, "verw: writable data"),
        ("0f 00 e8", 0x7B, false, "verw: read-only data"),
        ("0f 00 e0", 0x10, true, "verr: readable code"),
        ("0f 00 e8", 0x10, false, "verw: code is never writable"),
        ("0f 00 e0", 0x50, false, "verr: execute-only code"),
        ("0f 00 e0", 0x6B, true, "verr: readable conforming code ignores privilege"),
        ("0f 00 e8", 0x2B, true, "verw: user data at CPL 0"),
        ("0f 00 e8", 0x1B, false, "verw: DPL 0 < RPL 3"),
        ("0f 00 e0", 0x40, false, "verr: a TSS is a system descriptor"),
        ("0f 00 e8", 0x00, false, "verw: the null selector"),
    ])
    func verrAndVerw(hex: String, selector: UInt64, visible: Bool, why: String) throws {
        let (cpu, outcome) = try run(hex) { $0.regs[.rax] = selector }
        #expect(outcome == .emulated(hex.hasSuffix("e0") ? .verr : .verw), "\(why)")
        #expect((cpu.regs.rflags & Rflags.zero != 0) == visible, "\(why)")
        #expect(cpu.regs.rflags & (Rflags.carry | Rflags.sign) == Rflags.carry | Rflags.sign && cpu.regs[.rax] == selector)
        #expect(cpu.regs.rip == 0x1003)
    }

    @Test func linuxsClearCpuBuffersVerw() throws {
        // verw x86_verw_sel(%rip), x86_verw_sel = __KERNEL_DS (arch/x86/entry/entry.S)
        let (cpu, outcome) = try run("0f 00 2d fa 0f 00 00") { try $0.memory.write(UInt16(0x18), at: GuestAddress(0x2001)) }
        #expect(outcome == .emulated(.verw) && cpu.regs.rflags & Rflags.zero != 0 && cpu.regs.rip == 0x1007)
    }

    @Test func descriptorTableFaultsAndLock() throws {
        let (unmapped, outcome) = try run("48 0f 03 c0") { $0.regs[.rax] = 0x7B; $0.control.gdt.base = 0x30_0000 }
        #expect(outcome == .faulted(.lsl, .pageFault(at: 0x30_0078, write: false)))
        #expect(unmapped.regs.rip == 0x1000 && unmapped.registerWrites == 0)
        let (_, nonCanonical) = try run("48 0f 03 c0") { $0.regs[.rax] = 0x7B; $0.control.gdt.base = 0x8000_0000_0000_0000 }
        #expect(nonCanonical == .faulted(.lsl, .generalProtection))
        let (_, locked) = try run("f0 48 0f 03 c0") { $0.regs[.rax] = 0x7B }
        #expect(locked == .faulted(.lsl, .invalidOpcode))
    }

    @Test func countedByKind() throws {
        let cpu = try FakeEmulatedCpu()
        for (index, value) in Self.gdt { try cpu.memory.write(value, at: GuestAddress(Self.gdtBase + UInt64(index * 8))) }
        cpu.control.gdt = DescriptorTable(base: Self.gdtBase, limit: 127)
        let emulator = InstructionEmulator(memory: cpu.memory)
        for hex in ["48 0f 03 c0", "0f 02 c0", "0f 00 e0", "0f 00 e8", "48 0f 03 c0"] {
            try cpu.load(bytes(hex), at: 0x1000)
            _ = emulator.emulate(on: cpu)
        }
        #expect(emulator.counters.emulated == [.lsl: 2, .lar: 1, .verr: 1, .verw: 1])
    }
}
