@testable import ActorVmm

/// ``EmulatedCpu`` without KVM: registers and control state in fields, guest RAM in a real (in-process)
/// ``GuestMemory``, and page tables reduced to a map from linear page to physical page.
final class FakeEmulatedCpu: EmulatedCpu {
    let memory: GuestMemory
    var regs = GuestRegisters()
    var control = GuestControlState(cr0: 0x8005_0033, cr4: 0x0000_0620, efer: 0xD01, longMode: true, cpl: 0)
    var fpu = FpuControlState()
    /// Linear page number → physical page number; unmapped pages are absent.
    var pages: [UInt64: UInt64] = [:]
    private(set) var injected: [GuestException] = []
    private(set) var registerWrites = 0

    /// 1 MiB of RAM at 0, the first 256 pages identity-mapped.
    init() throws {
        memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20)])
        for page in UInt64(0)..<256 { pages[page] = page }
    }

    /// Places `code` at `rip` (through the page map) and points RIP at it.
    func load(_ code: [UInt8], at rip: UInt64) throws {
        for (offset, byte) in code.enumerated() {
            let linear = rip + UInt64(offset)
            guard let page = pages[linear >> 12] else { continue }
            try memory.write(byte, at: GuestAddress(page << 12 | linear & 0xFFF))
        }
        regs.rip = rip
    }

    func registers() -> GuestRegisters { regs }
    func setRegisters(_ registers: GuestRegisters) { regs = registers; registerWrites += 1 }
    func controlState() -> GuestControlState { control }
    func fpuControl() -> FpuControlState { fpu }
    func setMxcsr(_ value: UInt32) { fpu.mxcsr = value }
    func translate(_ linear: UInt64) -> UInt64? { pages[linear >> 12].map { $0 << 12 | linear & 0xFFF } }
    func inject(_ exception: GuestException) { injected.append(exception) }
}
