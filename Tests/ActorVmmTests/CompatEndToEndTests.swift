@testable import ActorVmm
import Boot
import CKvm
import EpollLoop
import Glibc
import Synchronization
import Testing

/// Records every port write (offset from 0xE0, value) in order.
final class ReportPort: RawBusDevice {
    let writes = Mutex<[(UInt64, UInt64)]>([])
    func read(offset: UInt64, width: Int) -> UInt64 { 0 }
    func write(offset: UInt64, width: Int, value: UInt64) { writes.withLock { $0.append((offset, value)) } }
    var done: Bool { writes.withLock { $0.contains { $0.0 == 1 } } }
}

/// The guest that exercises every emulated instruction in ring 0 on the real host, assembled at development
/// time with GNU as (`as compat.S -o compat.o && objcopy -O binary compat.o compat.bin`) and pasted here
/// as (offset, bytes) pieces of that binary. Loaded at 0x200000; the IDT at 0x210000 routes #BP, #GP and
/// #PF to the handlers at +0x800, +0x900 and +0xA00. The source:
///
///     # The compatibility-mode end-to-end guest: ring 0, 64-bit, loaded at 0x200000. Results go to port 0xE0,
///     # exception handlers report on port 0xE2, and 0xD0E on port 0xE1 says done. Data at 0x220000.
///         .code64
///     start:
///         mov $0x230000, %rsp
///         # popcnt: register, memory, and ZF for a zero source
///         movabs $0xF0F0F0F0F0F0F0F0, %rbx
///         popcnt %rbx, %rcx
///         mov %ecx, %eax
///         out %eax, $0xe0
///         movq $0xff, 0x220000
///         popcnt 0x220000, %rdx
///         mov %edx, %eax
///         out %eax, $0xe0
///         xor %esi, %esi
///         popcnt %rsi, %rdx
///         pushfq
///         pop %rax
///         and $0x8d5, %eax
///         out %eax, $0xe0
///         # stac / clac: RFLAGS.AC
///         stac
///         pushfq
///         pop %rax
///         shr $18, %eax
///         and $1, %eax
///         out %eax, $0xe0
///         clac
///         pushfq
///         pop %rax
///         shr $18, %eax
///         and $1, %eax
///         out %eax, $0xe0
///         # stmxcsr / ldmxcsr, and #GP(0) for reserved bits
///         stmxcsr 0x220010
///         mov 0x220010, %eax
///         out %eax, $0xe0
///         movl $0x7f80, 0x220014
///         ldmxcsr 0x220014
///         stmxcsr 0x220018
///         mov 0x220018, %eax
///         out %eax, $0xe0
///         movl $0x10001f80, 0x22001c
///         lea 1f(%rip), %r15
///         ldmxcsr 0x22001c
///     1:  stmxcsr 0x220018
///         mov 0x220018, %eax
///         out %eax, $0xe0
///         # cmpxchg16b: equal, different, misaligned (#GP(0))
///         movq $1, 0x220020
///         movq $2, 0x220028
///         mov $1, %eax
///         mov $2, %edx
///         mov $3, %ebx
///         mov $4, %ecx
///         lock cmpxchg16b 0x220020
///         setz %al
///         movzbl %al, %eax
///         out %eax, $0xe0
///         mov 0x220020, %rax
///         out %eax, $0xe0
///         mov 0x220028, %rax
///         out %eax, $0xe0
///         mov $9, %eax
///         xor %edx, %edx
///         lock cmpxchg16b 0x220020
///         setz %cl
///         movzbl %cl, %esi
///         out %eax, $0xe0
///         mov %edx, %eax
///         out %eax, $0xe0
///         mov %esi, %eax
///         out %eax, $0xe0
///         lea 2f(%rip), %r15
///         cmpxchg16b 0x220028
///     2:  # int3: the #BP handler reports the RIP it was given
///         int3
///     3:  lea 3b(%rip), %rax
///         out %eax, $0xe0
///         # #PF (CR2, error code) from an emulated read of an unmapped page
///         movabs $0x212345678, %rdi
///         lea 4f(%rip), %r15
///         popcnt (%rdi), %rax
///     4:  fwait
///         mov $0xd0e, %eax
///         out %eax, $0xe1
///     5:  hlt
///         jmp 5b
///
///         .org 0x800
///     bp_handler:                 # RIP, CS, RFLAGS, RSP, SS
///         push %rax
///         mov 8(%rsp), %rax
///         out %eax, $0xe2
///         pop %rax
///         iretq
///
///         .org 0x900
///     gp_handler:                 # error code, RIP, CS, RFLAGS, RSP, SS
///         push %rax
///         mov $13, %eax
///         out %eax, $0xe2
///         mov 8(%rsp), %rax
///         out %eax, $0xe2
///         mov %r15, 16(%rsp)
///         pop %rax
///         add $8, %rsp
///         iretq
///
///         .org 0xa00
///     pf_handler:
///         push %rax
///         mov $14, %eax
///         out %eax, $0xe2
///         mov 8(%rsp), %rax
///         out %eax, $0xe2
///         mov %cr2, %rax
///         out %eax, $0xe2
///         shr $32, %rax
///         out %eax, $0xe2
///         mov %r15, 16(%rsp)
///         pop %rax
///         add $8, %rsp
///         iretq
enum CompatGuest {
    static let base: UInt64 = 0x20_0000
    static let idt: UInt64 = 0x21_0000
    static let pieces: [(UInt64, [UInt8])] = [
        (0x0, [
            0x48, 0xc7, 0xc4, 0x00, 0x00, 0x23, 0x00, 0x48, 0xbb, 0xf0, 0xf0, 0xf0, 0xf0, 0xf0, 0xf0, 0xf0,
            0xf0, 0xf3, 0x48, 0x0f, 0xb8, 0xcb, 0x89, 0xc8, 0xe7, 0xe0, 0x48, 0xc7, 0x04, 0x25, 0x00, 0x00,
            0x22, 0x00, 0xff, 0x00, 0x00, 0x00, 0xf3, 0x48, 0x0f, 0xb8, 0x14, 0x25, 0x00, 0x00, 0x22, 0x00,
            0x89, 0xd0, 0xe7, 0xe0, 0x31, 0xf6, 0xf3, 0x48, 0x0f, 0xb8, 0xd6, 0x9c, 0x58, 0x25, 0xd5, 0x08,
            0x00, 0x00, 0xe7, 0xe0, 0x0f, 0x01, 0xcb, 0x9c, 0x58, 0xc1, 0xe8, 0x12, 0x83, 0xe0, 0x01, 0xe7,
            0xe0, 0x0f, 0x01, 0xca, 0x9c, 0x58, 0xc1, 0xe8, 0x12, 0x83, 0xe0, 0x01, 0xe7, 0xe0, 0x0f, 0xae,
            0x1c, 0x25, 0x10, 0x00, 0x22, 0x00, 0x8b, 0x04, 0x25, 0x10, 0x00, 0x22, 0x00, 0xe7, 0xe0, 0xc7,
            0x04, 0x25, 0x14, 0x00, 0x22, 0x00, 0x80, 0x7f, 0x00, 0x00, 0x0f, 0xae, 0x14, 0x25, 0x14, 0x00,
            0x22, 0x00, 0x0f, 0xae, 0x1c, 0x25, 0x18, 0x00, 0x22, 0x00, 0x8b, 0x04, 0x25, 0x18, 0x00, 0x22,
            0x00, 0xe7, 0xe0, 0xc7, 0x04, 0x25, 0x1c, 0x00, 0x22, 0x00, 0x80, 0x1f, 0x00, 0x10, 0x4c, 0x8d,
            0x3d, 0x08, 0x00, 0x00, 0x00, 0x0f, 0xae, 0x14, 0x25, 0x1c, 0x00, 0x22, 0x00, 0x0f, 0xae, 0x1c,
            0x25, 0x18, 0x00, 0x22, 0x00, 0x8b, 0x04, 0x25, 0x18, 0x00, 0x22, 0x00, 0xe7, 0xe0, 0x48, 0xc7,
            0x04, 0x25, 0x20, 0x00, 0x22, 0x00, 0x01, 0x00, 0x00, 0x00, 0x48, 0xc7, 0x04, 0x25, 0x28, 0x00,
            0x22, 0x00, 0x02, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xba, 0x02, 0x00, 0x00, 0x00,
            0xbb, 0x03, 0x00, 0x00, 0x00, 0xb9, 0x04, 0x00, 0x00, 0x00, 0xf0, 0x48, 0x0f, 0xc7, 0x0c, 0x25,
            0x20, 0x00, 0x22, 0x00, 0x0f, 0x94, 0xc0, 0x0f, 0xb6, 0xc0, 0xe7, 0xe0, 0x48, 0x8b, 0x04, 0x25,
            0x20, 0x00, 0x22, 0x00, 0xe7, 0xe0, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x22, 0x00, 0xe7, 0xe0,
            0xb8, 0x09, 0x00, 0x00, 0x00, 0x31, 0xd2, 0xf0, 0x48, 0x0f, 0xc7, 0x0c, 0x25, 0x20, 0x00, 0x22,
            0x00, 0x0f, 0x94, 0xc1, 0x0f, 0xb6, 0xf1, 0xe7, 0xe0, 0x89, 0xd0, 0xe7, 0xe0, 0x89, 0xf0, 0xe7,
            0xe0, 0x4c, 0x8d, 0x3d, 0x09, 0x00, 0x00, 0x00, 0x48, 0x0f, 0xc7, 0x0c, 0x25, 0x28, 0x00, 0x22,
            0x00, 0xcc, 0x48, 0x8d, 0x05, 0xf9, 0xff, 0xff, 0xff, 0xe7, 0xe0, 0x48, 0xbf, 0x78, 0x56, 0x34,
            0x12, 0x02, 0x00, 0x00, 0x00, 0x4c, 0x8d, 0x3d, 0x05, 0x00, 0x00, 0x00, 0xf3, 0x48, 0x0f, 0xb8,
            0x07, 0x9b, 0xb8, 0x0e, 0x0d, 0x00, 0x00, 0xe7, 0xe1, 0xf4, 0xeb, 0xfd,
        ]),
        (0x800, [
            0x50, 0x48, 0x8b, 0x44, 0x24, 0x08, 0xe7, 0xe2, 0x58, 0x48, 0xcf,
        ]),
        (0x900, [
            0x50, 0xb8, 0x0d, 0x00, 0x00, 0x00, 0xe7, 0xe2, 0x48, 0x8b, 0x44, 0x24, 0x08, 0xe7, 0xe2, 0x4c,
            0x89, 0x7c, 0x24, 0x10, 0x58, 0x48, 0x83, 0xc4, 0x08, 0x48, 0xcf,
        ]),
        (0xa00, [
            0x50, 0xb8, 0x0e, 0x00, 0x00, 0x00, 0xe7, 0xe2, 0x48, 0x8b, 0x44, 0x24, 0x08, 0xe7, 0xe2, 0x0f,
            0x20, 0xd0, 0xe7, 0xe2, 0x48, 0xc1, 0xe8, 0x20, 0xe7, 0xe2, 0x4c, 0x89, 0x7c, 0x24, 0x10, 0x58,
            0x48, 0x83, 0xc4, 0x08, 0x48, 0xcf,
        ]),
    ]
    /// The address after `int3` (offset 0x142): what the #BP handler must be given.
    static let afterInt3: UInt64 = base + 0x142

    /// What ports 0xE0 (results), 0xE1 (done) and 0xE2 (exception handlers) must see, in order.
    static let expected: [(UInt64, UInt64)] = [
        (0, 32), (0, 8), (0, 0x40),            // popcnt: register, memory, ZF for a zero source
        (0, 1), (0, 0),                        // stac, clac: RFLAGS.AC
        (0, 0x1F80), (0, 0x7F80),              // stmxcsr (reset value), ldmxcsr + stmxcsr
        (2, 13), (2, 0), (0, 0x7F80),          // ldmxcsr with reserved bits: #GP(0), MXCSR unchanged
        (0, 1), (0, 3), (0, 4),                // cmpxchg16b equal: ZF, memory replaced
        (0, 3), (0, 4), (0, 0),                // cmpxchg16b different: RDX:RAX loaded, ZF clear
        (2, 13), (2, 0),                       // misaligned cmpxchg16b: #GP(0)
        (2, afterInt3), (0, afterInt3),        // int3: the handler saw the next RIP
        (2, 14), (2, 0), (2, 0x1234_5678), (2, 2),  // #PF: error code 0, CR2 = 0x2_1234_5678
        (1, 0xD0E),                            // fwait, done
    ]

    /// Writes the code, the IDT and the long-mode structures; returns the boot state.
    static func load(into memory: GuestMemory, code: [(UInt64, [UInt8])] = pieces) throws -> VcpuBootState {
        try LongMode.writeStructures(to: memory)
        for (offset, bytes) in code { try memory.write(bytes: bytes, at: GuestAddress(base + offset)) }
        for (vector, offset) in [(3, 0x800), (13, 0x900), (14, 0xA00)] as [(UInt64, UInt64)] {
            let handler = base + offset
            let low = (handler & 0xFFFF) | UInt64(LongMode.codeSelector) << 16 | 0x8E << 40 | ((handler >> 16) & 0xFFFF) << 48
            try memory.write(low, at: GuestAddress(idt + vector * 16))
            try memory.write(handler >> 32, at: GuestAddress(idt + vector * 16 + 8))
        }
        var state = LongMode.bootState(entry: base)
        state.idtBase = idt
        state.idtLimit = 0xFFF
        state.cr4 |= GuestControlState.cr4Osfxsr | 1 << 10  // OSFXSR, OSXMMEXCPT: SSE state instructions allowed
        return state
    }

    /// Runs `code` on one vCPU until it reports done or the VM stops; returns the port writes, the stop
    /// reason if any, and the emulator.
    static func run(code: [(UInt64, [UInt8])] = pieces, compat: Bool) async throws
        -> (writes: [(UInt64, UInt64)], stop: VmStopReason?, emulator: InstructionEmulator?) {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 64 << 20)])
        let state = try load(into: memory, code: code)
        let kvm = try Kvm()
        let vm = try Vm(kvm: kvm, memory: memory, options: VmOptions(pit: false))
        let vcpu = try vm.createVcpu(id: 0)
        try vcpu.setCPUID(try kvm.supportedCPUID())
        try vcpu.setBootState(state)
        let port = ReportPort()
        let loop = try EventLoop(name: "compat-e2e")
        let latch = StopLatch()
        let emulator = HostCompatibility(isNeeded: compat).emulator(for: vm)
        let manager = VcpuManager(loop: loop, vcpus: [vcpu],
                                  buses: IoBuses(pio: try Bus().inserting(name: "report", base: 0xE0, size: 3, .raw(port))),
                                  stopLatch: latch, emulator: emulator)
        #expect(manager.compatibilityMode == compat)
        try await manager.start()
        _ = waitFor(60) { port.done || latch.stopReason != nil }
        await manager.stop()
        loop.shutdown()
        return (port.writes.withLock { $0 }, latch.stopReason, emulator)
    }
}

/// Compatibility mode on /dev/kvm: the guest above, in ring 0, runs every emulated instruction. On this
/// host (kvm_pvm) each of them exits with KVM_INTERNAL_ERROR_EMULATION and ActorVMM completes it. Only there:
/// on other KVMs these instructions run natively and their faults are the CPU's own business (QEMU's emulated
/// CPU under the nested tier, docs/nested.md, does not raise ldmxcsr's #GP for reserved MXCSR bits).
///
/// Nested in `VcpuLifecycleTests` (serialized, /dev/kvm only) so that no two VMs exist in this process at
/// once: that suite compares the process's KVM descriptors before and after its test.
extension VcpuLifecycleTests {
    @Suite(.enabled(if: HostCompatibility.detect(), "compatibility mode is for hosts whose KVM emulates ring 0 (kvm_pvm)"))
    struct CompatEndToEndTests {
        @Test func everyHandledInstructionWorksInTheGuest() async throws {
            let (writes, stop, emulator) = try await CompatGuest.run(compat: true)
            #expect(stop == nil, "\(stop.map { "\($0)" } ?? "")")
            #expect(writes.map(\.0) == CompatGuest.expected.map(\.0))
            #expect(writes.map(\.1) == CompatGuest.expected.map(\.1))
            if let counters = emulator?.counters {
                #expect(counters.emulated == [.popcnt: 3, .stac: 1, .clac: 1, .stmxcsr: 3, .ldmxcsr: 1,
                                              .cmpxchg16b: 2, .int3: 1, .fwait: 1], "\(counters.summary)")
                // ldmxcsr's #GP and popcnt's #PF come from ActorVMM; the misaligned cmpxchg16b's #GP is raised by
                // the host's own emulator, which checks the alignment before it gives up on the instruction.
                #expect(counters.faults == 2, "\(counters.summary)")
            }
        }

        /// `lsl`, `lar` and `verw` against ActorVMM's boot GDT (code 0x10, data 0x18, TSS 0x20), in ring 0: the
        /// emulator reads GDTR through `KVM_GET_SREGS` and the descriptors through the guest's page tables. On
        /// a hardware-virtualisation host they run natively and must give the same results.
        @Test func segmentChecksReadTheGuestsGdt() async throws {
            let code: [UInt8] = [
                0xB8, 0x18, 0, 0, 0, 0x0F, 0x03, 0xC8, 0x89, 0xC8, 0xE7, 0xE0,  // lsl %eax(0x18),%ecx; report
                0xB8, 0x10, 0, 0, 0, 0x0F, 0x02, 0xC8, 0x89, 0xC8, 0xE7, 0xE0,  // lar %eax(0x10),%ecx; report
                0xB8, 0x18, 0, 0, 0, 0x0F, 0x00, 0xE8, 0x9C, 0x58, 0x83, 0xE0, 0x40, 0xE7, 0xE0,  // verw data: ZF
                0xB8, 0x10, 0, 0, 0, 0x0F, 0x00, 0xE8, 0x9C, 0x58, 0x83, 0xE0, 0x40, 0xE7, 0xE0,  // verw code: no ZF
                0x48, 0xC7, 0xC0, 0x20, 0, 0, 0, 0x48, 0x0F, 0x03, 0xC0, 0xE7, 0xE0,  // lsl %rax(TSS 0x20),%rax
                0xB8, 0x0E, 0x0D, 0, 0, 0xE7, 0xE1, 0xF4, 0xEB, 0xFD,             // done
            ]
            let (writes, stop, emulator) = try await CompatGuest.run(code: [(0, code)], compat: true)
            #expect(stop == nil, "\(stop.map { "\($0)" } ?? "")")
            #expect(writes.map(\.1) == [0xFFFF_FFFF, 0x00A0_9B00, 0x40, 0, 0xFFFF_FFFF, 0xD0E], "\(writes)")
            if HostCompatibility.detect(), let counters = emulator?.counters {
                #expect(counters.emulated == [.lsl: 2, .lar: 1, .verw: 2], "\(counters.summary)")
            }
        }

        @Test(.enabled(if: HostCompatibility.detect(), "only a host whose emulator rejects these instructions"))
        func withoutCompatibilityModeTheFirstOneStopsTheVm() async throws {
            let (writes, stop, emulator) = try await CompatGuest.run(compat: false)
            #expect(emulator == nil && writes.isEmpty)
            #expect(stop == .unhandledExit(reason: "KVM_EXIT_INTERNAL_ERROR suberror 1", rip: CompatGuest.base + 0x11))
        }

        @Test func anUnhandledInstructionStopsWithOneLine() async throws {
            // xor %edi,%edi; xrstor (%rdi)
            let (_, stop, _) = try await CompatGuest.run(code: [(0, [0x31, 0xFF, 0x0F, 0xAE, 0x2F])], compat: true)
            #expect(stop?.description == "unhandled instruction at RIP 0x200002 (bytes 0f ae 2f, mnemonic xrstor)")
            #expect(stop?.exitCode == 1)
        }
    }
}
