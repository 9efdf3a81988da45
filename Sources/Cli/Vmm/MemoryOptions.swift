import ActorVmm
import CKvm
import Glibc

/// The two memory settings Cloud Hypervisor's config has that ActorVMM honours besides the size:
/// `memory.thp` and `cpus.max_phys_bits`.
enum MemoryOptions {
    /// `memory.thp`: advises the kernel to back guest RAM with transparent huge pages, as Cloud Hypervisor
    /// does. Only advice: a kernel without THP (or with it off) ignores it, and so does this.
    static func adviseHugePages(_ memory: GuestMemory) {
        for region in memory.regions {
            // SAFETY: the region is a live anonymous mapping of `size` bytes owned by `memory`; madvise only
            // changes how the kernel backs it, never its contents.
            _ = madvise(UnsafeMutableRawPointer(bitPattern: region.hostAddress), Int(region.size), MADV_HUGEPAGE)
        }
    }

    /// `cpus.max_phys_bits`: the guest's physical address width (CPUID 0x8000_0008 EAX[7:0]) becomes the
    /// smaller of the host's and `bits`, as in Cloud Hypervisor; nil leaves it alone.
    static func limitPhysicalAddressBits(_ entries: [kvm_cpuid_entry2], to bits: Int?) -> [kvm_cpuid_entry2] {
        guard let bits else { return entries }
        return entries.map { entry in
            var entry = entry
            if entry.function == 0x8000_0008, entry.eax & 0xFF > UInt32(bits) {
                entry.eax = (entry.eax & ~0xFF) | UInt32(bits)
            }
            return entry
        }
    }

    /// Whether `bits` of physical address reach the end of the guest's RAM.
    static func reaches(_ memory: GuestMemory, bits: Int) -> Bool {
        let top = memory.regions.map(\.end).max() ?? 0
        return bits >= 64 || top <= UInt64(1) << UInt64(bits)
    }
}
