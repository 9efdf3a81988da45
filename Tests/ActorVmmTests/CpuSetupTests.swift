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

    @Test func topologyLeavesDescribeMaxVcpusAndTheApicID() {
        let supported = [leaf(1), leaf(0xB, 0), leaf(0xB, 1), leaf(0x8000_0008), leaf(0x4000_0000)]
        let entries = Vcpu.cpuid(supported, id: 3, maxVcpus: 6)
        let one = entries[0], smt = entries[1], core = entries[2], amd = entries[3]
        #expect(one.ebx >> 24 == 3 && (one.ebx >> 16) & 0xFF == 6 && one.edx & (1 << 28) != 0)
        #expect(smt.ebx == 1 && smt.ecx == 0x100 && smt.edx == 3)
        #expect(core.eax == 3 && core.ebx == 6 && core.ecx == 0x201 && core.edx == 3)  // 6 cores need 3 id bits
        #expect(amd.ecx & 0xFF == 5)
        #expect(entries[4].ebx == 0xFFFF_FFFF, "the hypervisor leaf passes through")
    }

    @Test func singleVcpuHasNoHTT() {
        let entries = Vcpu.cpuid([leaf(1)], id: 0, maxVcpus: 1)
        #expect(entries[0].edx & (1 << 28) == 0 && (entries[0].ebx >> 16) & 0xFF == 1)
    }
}
