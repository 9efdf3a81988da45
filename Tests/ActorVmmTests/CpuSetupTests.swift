@testable import ActorVmm
import CKvm
import Testing

@Suite struct CpuSetupTests {
    func leaf(_ function: UInt32, _ index: UInt32 = 0) -> kvm_cpuid_entry2 {
        var e = kvm_cpuid_entry2()
        e.function = function
        e.index = index
        e.ebx = 0xFFFF_FFFF
        return e
    }

    func maxBasic(_ eax: UInt32) -> kvm_cpuid_entry2 {
        var e = leaf(0)
        e.eax = eax
        return e
    }

    func find(_ entries: [kvm_cpuid_entry2], _ function: UInt32, _ index: UInt32 = 0) -> kvm_cpuid_entry2? {
        entries.first { $0.function == function && $0.index == index }
    }

    @Test func topologyLeavesDescribeMaxVcpusAndTheApicID() throws {
        let supported = [maxBasic(0x1F), leaf(1), leaf(0xB, 0), leaf(0xB, 1), leaf(0x8000_0008), leaf(0x8000_001E),
                         leaf(0x4000_0000)]
        let entries = Vcpu.cpuid(supported, id: 3, maxVcpus: 6)
        let one = try #require(find(entries, 1)), amd = try #require(find(entries, 0x8000_0008))
        #expect(one.ebx >> 24 == 3 && (one.ebx >> 16) & 0xFF == 6 && one.edx & (1 << 28) != 0)
        for function: UInt32 in [0xB, 0x1F] {
            let smt = try #require(find(entries, function, 0)), core = try #require(find(entries, function, 1))
            let end = try #require(find(entries, function, 2))
            #expect(smt.eax == 0 && smt.ebx == 1 && smt.ecx == 0x100 && smt.edx == 3)
            #expect(core.eax == 3 && core.ebx == 6 && core.ecx == 0x201 && core.edx == 3)  // 6 cores need 3 id bits
            #expect((end.ecx >> 8) & 0xFF == 0 && end.ecx & 0xFF == 2, "level type 0 ends the list")
            #expect([smt, core, end].allSatisfy { $0.flags & UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0 })
        }
        #expect(entries.filter { $0.function == 0xB }.count == 3, "KVM's own 0xB entries are replaced, not kept")
        #expect(amd.ecx & 0xFF == 5 && (amd.ecx >> 12) & 0xF == 3)
        let ext = try #require(find(entries, 0x8000_001E))
        #expect(ext.eax == 3 && ext.ebx == 3 && ext.ecx == 0, "extended APIC id, core id, node 0")
        #expect(try #require(find(entries, 0x4000_0000)).ebx == 0xFFFF_FFFF, "the hypervisor leaf passes through")
    }

    /// As KVM reports it on this project's AMD host: leaf 0xB with subleaf 0 only, all zeros; no 0x1F.
    @Test func leafBIsCompletedWhenKvmReportsOnlySubleafZero() throws {
        var zeroB = leaf(0xB, 0)
        zeroB.ebx = 0
        let entries = Vcpu.cpuid([maxBasic(0x1C), leaf(1), zeroB], id: 1, maxVcpus: 2)
        let core = try #require(find(entries, 0xB, 1))
        #expect(core.eax == 1 && core.ebx == 2 && core.edx == 1, "a core level puts both vCPUs in package 0")
        #expect(find(entries, 0x1F) == nil, "no 0x1F beyond the maximum basic leaf")
    }

    @Test func singleVcpuHasNoHTT() {
        let entries = Vcpu.cpuid([leaf(1)], id: 0, maxVcpus: 1)
        #expect(entries[0].edx & (1 << 28) == 0 && (entries[0].ebx >> 16) & 0xFF == 1)
    }

    /// Ordinary KVM's supported CPUID lacks the hypervisor bit; every vCPU must report it anyway, or Linux
    /// skips the KVM leaves (no kvm-clock) and hangs calibrating the TSC.
    @Test func leafOneAlwaysHasTheHypervisorBit() throws {
        var one = leaf(1)
        one.ecx = 0x0000_0201  // SSSE3 and SSE3, no bit 31: as hardware KVM reports it
        for (id, count) in [(0, 1), (2, 4)] {
            let entries = Vcpu.cpuid([maxBasic(0xD), one], id: id, maxVcpus: count)
            let ecx = try #require(find(entries, 1)).ecx
            #expect(ecx & (1 << 31) != 0, "CPUID.1:ECX.hypervisor set for vCPU \(id) of \(count)")
            #expect(ecx & 0x201 == 0x201, "the reported features are kept")
        }
    }
}
