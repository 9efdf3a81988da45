import ActorVmm

/// Sets up what a 64-bit kernel entered directly in long mode needs (the way Firecracker enters a
/// vmlinux): identity-mapped page tables, a flat GDT, and the register state that points at them.
public enum LongMode {
    /// GDT access/flags words (the descriptor's bits 40–55): 64-bit code, data, and a 64-bit TSS.
    static let codeFlags: UInt64 = 0xA09B, dataFlags: UInt64 = 0xC093, tssFlags: UInt64 = 0x808B
    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20

    /// Packs one GDT descriptor.
    public static func gdtEntry(flags: UInt64, base: UInt64, limit: UInt64) -> UInt64 {
        ((base & 0xFF00_0000) << (56 - 24)) | ((flags & 0x0000_F0FF) << 40) | ((limit & 0x000F_0000) << (48 - 16))
            | ((base & 0x00FF_FFFF) << 16) | (limit & 0x0000_FFFF)
    }

    /// The boot GDT: null, null, code (0x10), data (0x18), TSS (0x20).
    public static let gdt: [UInt64] = [
        0, 0,
        gdtEntry(flags: codeFlags, base: 0, limit: 0xFFFFF),
        gdtEntry(flags: dataFlags, base: 0, limit: 0xFFFFF),
        gdtEntry(flags: tssFlags, base: 0, limit: 0xFFFFF),
    ]

    /// Writes the GDT, an empty IDT, and page tables identity-mapping the first 4 GiB with 2 MiB pages.
    public static func writeStructures(to memory: GuestMemory) throws(GuestMemoryError) {
        for (index, entry) in gdt.enumerated() {
            try memory.write(entry, at: GuestAddress(Layout.gdt.rawValue + UInt64(index * 8)))
        }
        try memory.write(UInt64(0), at: Layout.idt)
        let present: UInt64 = 0x3, hugePage: UInt64 = 0x83  // present | writable (| page size)
        try memory.write(Layout.pdpt.rawValue | present, at: Layout.pml4)
        for gib in 0..<Layout.identityMappedGiB {
            let directory = Layout.pageDirectories.rawValue + gib * 0x1000
            try memory.write(directory | present, at: GuestAddress(Layout.pdpt.rawValue + gib * 8))
            for entry in 0..<UInt64(512) {
                let physical = (gib * 512 + entry) << 21
                try memory.write(physical | hugePage, at: GuestAddress(directory + entry * 8))
            }
        }
    }

    /// Registers for entering a 64-bit kernel at `entry` with RSI pointing at the zero page.
    public static func bootState(entry: UInt64) -> VcpuBootState {
        var state = VcpuBootState(
            code: SegmentState(gdtEntry: gdt[Int(codeSelector / 8)], selector: codeSelector),
            data: SegmentState(gdtEntry: gdt[Int(dataSelector / 8)], selector: dataSelector),
            tss: SegmentState(gdtEntry: gdt[Int(tssSelector / 8)], selector: tssSelector))
        state.rip = entry
        state.rsp = Layout.bootStack.rawValue
        state.rbp = Layout.bootStack.rawValue
        state.rsi = Layout.zeroPage.rawValue
        state.rflags = 0x2
        state.cr0 = 0x8000_0011  // PG | ET | PE
        state.cr3 = Layout.pml4.rawValue
        state.cr4 = 0x20         // PAE
        state.efer = 0x500       // LMA | LME
        state.gdtBase = Layout.gdt.rawValue
        state.gdtLimit = UInt16(gdt.count * 8 - 1)
        state.idtBase = Layout.idt.rawValue
        state.idtLimit = 7
        return state
    }
}
