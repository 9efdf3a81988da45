/// One x86 segment register as KVM describes it (`struct kvm_segment`).
public struct SegmentState: Sendable, Equatable {
    public var base: UInt64
    public var limit: UInt32
    public var selector: UInt16
    public var type: UInt8
    public var present: Bool
    public var dpl: UInt8
    public var defaultSize32: Bool  // D/B
    public var codeOrData: Bool     // S
    public var long: Bool           // L
    public var granularity4K: Bool  // G

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool, dpl: UInt8,
                defaultSize32: Bool, codeOrData: Bool, long: Bool, granularity4K: Bool) {
        self.base = base; self.limit = limit; self.selector = selector; self.type = type
        self.present = present; self.dpl = dpl; self.defaultSize32 = defaultSize32
        self.codeOrData = codeOrData; self.long = long; self.granularity4K = granularity4K
    }

    /// Decodes a GDT entry (the 8-byte descriptor) loaded with `selector`.
    public init(gdtEntry e: UInt64, selector: UInt16) {
        base = ((e >> 16) & 0xFF_FFFF) | (((e >> 56) & 0xFF) << 24)
        let rawLimit = UInt32((e & 0xFFFF) | (((e >> 48) & 0xF) << 16))
        granularity4K = (e >> 55) & 1 == 1
        limit = granularity4K ? (rawLimit << 12) | 0xFFF : rawLimit
        self.selector = selector
        type = UInt8((e >> 40) & 0xF)
        codeOrData = (e >> 44) & 1 == 1
        dpl = UInt8((e >> 45) & 3)
        present = (e >> 47) & 1 == 1
        long = (e >> 53) & 1 == 1
        defaultSize32 = (e >> 54) & 1 == 1
    }
}

/// The register state a boot protocol asks the boot vCPU to start with. Produced by `Boot`, applied by
/// ``Vcpu`` through `KVM_SET_REGS`/`KVM_SET_SREGS`, so boot code never sees a KVM descriptor.
public struct VcpuBootState: Sendable, Equatable {
    public var rip: UInt64 = 0
    public var rsp: UInt64 = 0
    public var rbp: UInt64 = 0
    public var rsi: UInt64 = 0
    public var rbx: UInt64 = 0
    public var rflags: UInt64 = 0x2
    public var cr0: UInt64 = 0
    public var cr3: UInt64 = 0
    public var cr4: UInt64 = 0
    public var efer: UInt64 = 0
    public var code: SegmentState
    public var data: SegmentState
    public var tss: SegmentState
    public var gdtBase: UInt64 = 0
    public var gdtLimit: UInt16 = 0
    public var idtBase: UInt64 = 0
    public var idtLimit: UInt16 = 0

    public init(code: SegmentState, data: SegmentState, tss: SegmentState) {
        self.code = code; self.data = data; self.tss = tss
    }
}
