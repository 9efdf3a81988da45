// The part of "VMM start to first guest instruction" that is KVM's, whoever the VMM: row 5's KVM floor.
// Measured in this process, on one thread, with that thread's CPU clock: open /dev/kvm, create the VM
// (in-kernel irqchip and PIT, as actor-vmm does, and its 128 MiB memory slot), create vCPU 0, give it
// KVM's CPUID and the start guest's boot state, and KVM_RUN until the guest's first exit (its OUT to COM1,
// the third instruction). No devices, no threads, no event loops: the start of any VMM on this host costs
// at least this much, so actor-vmm's own start cost is its CPU time minus this floor.
import ActorVmm
import Boot
import CKvm
import EpollLoop
import Glibc

enum KvmStartFloor {
    /// CPU milliseconds of one cold KVM start with `mebibytes` of guest RAM and the ELF at `guestPath`.
    static func measure(guestPath: String, mebibytes: Int) throws -> Double {
        let memory = try benchMemory(mebibytes: mebibytes)
        let boot = try KernelLoader.loadElfKernel(path: guestPath, cmdline: "", memory: memory)
        let start = threadCPUNanoseconds()
        let kvm = try Kvm()
        let vm = try Vm(kvm: kvm, memory: memory, options: VmOptions(pit: true))
        let vcpu = try vm.createVcpu(id: 0)
        try vcpu.setCPUID(try kvm.supportedCPUID())
        try vcpu.setBootState(boot.bootState)
        guard ckvm_ioctl(vcpu.fd, CKVM_RUN) == 0 else {
            throw BenchError("KVM start floor: KVM_RUN failed: \(Errno(rawValue: errno))")
        }
        let end = threadCPUNanoseconds()
        return Double(end - start) / 1e6
    }

    static func threadCPUNanoseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return now.tv_sec * 1_000_000_000 + now.tv_nsec
    }
}
