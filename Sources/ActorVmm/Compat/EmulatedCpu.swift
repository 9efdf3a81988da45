/// The vCPU as instruction emulation sees it: registers, control state, the x87/SSE control words,
/// linear → physical translation, exception injection, and guest RAM.
///
/// ``KvmEmulatedCpu`` implements it with KVM ioctls on a stopped vCPU; tests implement it with a fake over
/// an in-memory ``GuestMemory``, so every handler is tested without /dev/kvm.
public protocol EmulatedCpu {
    /// Guest RAM, for operands once translated to guest-physical addresses.
    var memory: GuestMemory { get }
    /// The general-purpose registers, RIP and RFLAGS. The corresponding ioctl is `KVM_GET_REGS`.
    func registers() throws(KvmError) -> GuestRegisters
    /// The corresponding ioctl is `KVM_SET_REGS`.
    func setRegisters(_ registers: GuestRegisters) throws(KvmError)
    /// Control registers, EFER, CS and the FS/GS bases. The corresponding ioctl is `KVM_GET_SREGS`.
    func controlState() throws(KvmError) -> GuestControlState
    /// FCW, FSW and MXCSR (with the CPU's MXCSR mask).
    func fpuControl() throws(KvmError) -> FpuControlState
    /// Loads MXCSR; the caller has checked the reserved bits against the mask.
    func setMxcsr(_ value: UInt32) throws(KvmError)
    /// The guest-physical address `linear` maps to through the guest's page tables, or nil when it is not
    /// mapped. The corresponding ioctl is `KVM_TRANSLATE`.
    func translate(_ linear: UInt64) throws(KvmError) -> UInt64?
    /// Delivers `exception` at the current RIP on the next entry. The corresponding ioctl is
    /// `KVM_SET_VCPU_EVENTS`.
    func inject(_ exception: GuestException) throws(KvmError)
}

/// The part of `struct kvm_sregs` instruction emulation checks.
public struct GuestControlState: Sendable, Equatable {
    public var cr0: UInt64
    public var cr4: UInt64
    public var efer: UInt64
    /// CS.L: the vCPU runs 64-bit code.
    public var longMode: Bool
    /// The current privilege level (CS.DPL).
    public var cpl: UInt8
    public var fsBase: UInt64
    public var gsBase: UInt64
    /// GDTR: the global descriptor table's linear base and limit.
    public var gdt: DescriptorTable
    /// LDTR's table, or nil when LDTR holds a null selector (unusable).
    public var ldt: DescriptorTable?

    public init(cr0: UInt64, cr4: UInt64, efer: UInt64, longMode: Bool, cpl: UInt8, fsBase: UInt64 = 0, gsBase: UInt64 = 0,
                gdt: DescriptorTable = DescriptorTable(base: 0, limit: 0), ldt: DescriptorTable? = nil) {
        self.cr0 = cr0; self.cr4 = cr4; self.efer = efer; self.longMode = longMode; self.cpl = cpl
        self.fsBase = fsBase; self.gsBase = gsBase; self.gdt = gdt; self.ldt = ldt
    }

    public static let cr0MonitorCoprocessor: UInt64 = 1 << 1  // MP
    public static let cr0Emulation: UInt64 = 1 << 2           // EM
    public static let cr0TaskSwitched: UInt64 = 1 << 3        // TS
    public static let cr4La57: UInt64 = 1 << 12
    public static let cr4Osfxsr: UInt64 = 1 << 9
    public static let eferLma: UInt64 = 1 << 10

    /// Bits of a canonical linear address: 57 with 5-level paging, else 48.
    public var linearAddressBits: Int { cr4 & Self.cr4La57 != 0 ? 57 : 48 }

    public func isCanonical(_ address: UInt64) -> Bool {
        let shift = UInt64(64 - linearAddressBits)
        return UInt64(bitPattern: Int64(bitPattern: address << shift) >> Int64(shift)) == address
    }
}

/// A descriptor table (the GDT, or the LDT LDTR selects): linear base address and limit (the offset of its
/// last byte).
public struct DescriptorTable: Sendable, Equatable {
    public var base: UInt64
    public var limit: UInt32
    public init(base: UInt64, limit: UInt32) { self.base = base; self.limit = limit }
}

/// The x87 and SSE control and status words the handlers need (from the vCPU's XSAVE area).
public struct FpuControlState: Sendable, Equatable {
    /// x87 control word: exception masks in bits 0–5.
    public var fcw: UInt16
    /// x87 status word: exception flags in bits 0–5, ES (error summary) in bit 7.
    public var fsw: UInt16
    public var mxcsr: UInt32
    /// MXCSR bits the CPU implements (FXSAVE's MXCSR_MASK; 0 there means the default 0xFFBF).
    public var mxcsrMask: UInt32

    public init(fcw: UInt16 = 0x37F, fsw: UInt16 = 0, mxcsr: UInt32 = 0x1F80, mxcsrMask: UInt32 = 0xFFFF) {
        self.fcw = fcw; self.fsw = fsw; self.mxcsr = mxcsr; self.mxcsrMask = mxcsrMask
    }

    /// True when an unmasked x87 exception is pending: the next waiting x87 instruction (or `fwait`) would
    /// raise #MF. ES is set whenever an unmasked exception flag is, so either test suffices on a
    /// consistent state; both are checked.
    public var x87ExceptionPending: Bool {
        fsw & 0x80 != 0 || (fsw & 0x3F) & ~(fcw & 0x3F) != 0
    }
}

/// An exception the emulator raises in the guest.
public struct GuestException: Sendable, Equatable, CustomStringConvertible {
    public var vector: UInt8
    public var errorCode: UInt32?
    /// For #PF: the faulting linear address, loaded into CR2 before delivery.
    public var pageFaultAddress: UInt64?

    public init(vector: UInt8, errorCode: UInt32? = nil, pageFaultAddress: UInt64? = nil) {
        self.vector = vector; self.errorCode = errorCode; self.pageFaultAddress = pageFaultAddress
    }

    /// #BP, raised by `int3` after RIP has moved past it.
    public static let breakpoint = GuestException(vector: 3)
    /// #UD.
    public static let invalidOpcode = GuestException(vector: 6)
    /// #NM.
    public static let deviceNotAvailable = GuestException(vector: 7)
    /// #SS(0): a non-canonical stack-based address.
    public static let stackFault = GuestException(vector: 12, errorCode: 0)
    /// #GP(0).
    public static let generalProtection = GuestException(vector: 13, errorCode: 0)

    /// #PF for a supervisor data access at `address` that found no translation (error code P=0, W as given).
    public static func pageFault(at address: UInt64, write: Bool) -> GuestException {
        GuestException(vector: 14, errorCode: write ? 2 : 0, pageFaultAddress: address)
    }

    public var description: String {
        let names: [UInt8: String] = [3: "#BP", 6: "#UD", 7: "#NM", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF"]
        var text = names[vector] ?? "vector \(vector)"
        if let errorCode { text += "(\(errorCode))" }
        if let pageFaultAddress { text += " at \(hex(pageFaultAddress))" }
        return text
    }
}
