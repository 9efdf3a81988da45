import ActorVmm

/// The PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h): the kernel's 32-bit entry gets
/// EBX = the address of an `hvm_start_info`, which points at the command line, the modules (the
/// initramfs) and the memory map.
public enum Pvh {
    public static let magic: UInt32 = 0x336E_C578  // "xEn3" with the high bit of 'E' set
    /// Where the structures go (low memory, below the zero page; see Layout).
    public static let startInfo = GuestAddress(0x6000)
    public static let moduleList = GuestAddress(0x6040)
    public static let memoryMap = GuestAddress(0x6080)
    public static let memoryMapCapacity = (0x7000 - 0x6080) / 24
    static let memmapTypeRam: UInt32 = 1

    /// `struct hvm_start_info` (version 1) followed by its tables, as (address, bytes) pieces.
    public static func startInfo(cmdline: GuestAddress, module: (address: UInt64, size: UInt64)?, rsdp: UInt64,
                                 memoryMap: [E820Entry]) throws(BootError) -> [(GuestAddress, [UInt8])] {
        guard memoryMap.count <= memoryMapCapacity else {
            throw .memory(.invalidLayout("\(memoryMap.count) memory map entries, at most \(memoryMapCapacity)"))
        }
        var info: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T, _ into: inout [UInt8]) { withUnsafeBytes(of: value.littleEndian) { into += $0 } }
        put(magic, &info)
        put(UInt32(1), &info)                       // version
        put(UInt32(0), &info)                       // flags
        put(UInt32(module == nil ? 0 : 1), &info)   // nr_modules
        put(module == nil ? 0 : moduleList.rawValue, &info)
        put(cmdline.rawValue, &info)
        put(rsdp, &info)
        put(Self.memoryMap.rawValue, &info)
        put(UInt32(memoryMap.count), &info)
        put(UInt32(0), &info)                       // reserved
        var modules: [UInt8] = []
        if let module {
            put(module.address, &modules); put(module.size, &modules); put(UInt64(0), &modules); put(UInt64(0), &modules)
        }
        var map: [UInt8] = []
        for entry in memoryMap {
            put(entry.address, &map); put(entry.size, &map); put(entry.kind.rawValue, &map); put(UInt32(0), &map)
        }
        return [(startInfo, info), (moduleList, modules), (Self.memoryMap, map)]
    }

    /// 32-bit flat protected mode, paging off, EBX = start info (the PVH entry state).
    public static func bootState(entry: UInt32) -> VcpuBootState {
        let code = SegmentState(gdtEntry: LongMode.gdtEntry(flags: 0xC09B, base: 0, limit: 0xFFFFF), selector: LongMode.codeSelector)
        let data = SegmentState(gdtEntry: LongMode.gdtEntry(flags: 0xC093, base: 0, limit: 0xFFFFF), selector: LongMode.dataSelector)
        let tss = SegmentState(gdtEntry: LongMode.gdt[Int(LongMode.tssSelector / 8)], selector: LongMode.tssSelector)
        var state = VcpuBootState(code: code, data: data, tss: tss)
        state.rip = UInt64(entry)
        state.rbx = startInfo.rawValue
        state.rflags = 0x2
        state.cr0 = 0x11  // PE | ET
        state.gdtBase = Layout.gdt.rawValue
        state.gdtLimit = UInt16(LongMode.gdt.count * 8 - 1)
        state.idtBase = Layout.idt.rawValue
        state.idtLimit = 7
        return state
    }

    /// The GDT for PVH entry: the same slots as the 64-bit one, with 32-bit code.
    public static let gdt: [UInt64] = [
        0, 0,
        LongMode.gdtEntry(flags: 0xC09B, base: 0, limit: 0xFFFFF),
        LongMode.gdtEntry(flags: 0xC093, base: 0, limit: 0xFFFFF),
        LongMode.gdtEntry(flags: 0x808B, base: 0, limit: 0xFFFFF),
    ]
}
