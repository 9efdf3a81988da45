import CKvm
import EpollLoop

/// Per-vCPU-thread settings that are not part of the guest: where the thread may run, and whether it
/// records exit timestamps. The defaults (no pinning, no recorder) are what `actor-vmm` uses.
public struct VcpuThreadOptions: Sendable {
    /// Pin the vCPU thread to this host CPU (`pthread_setaffinity_np`) before it first enters the guest.
    public var cpu: Int?
    /// Record per-exit timestamps (benchmarks only; see ``ExitRecorder``).
    public var recorder: ExitRecorder?
    /// Runs on the vCPU thread after it is named and pinned, before it first enters the guest (the VMM
    /// installs the thread's seccomp filter).
    public var onStart: (@Sendable () -> Void)?

    public init(cpu: Int? = nil, recorder: ExitRecorder? = nil, onStart: (@Sendable () -> Void)? = nil) {
        self.cpu = cpu
        self.recorder = recorder
        self.onStart = onStart
    }
}

/// Pins the calling thread to host CPU `cpu`. The corresponding C function is `pthread_setaffinity_np`.
public func pinCurrentThread(to cpu: Int) throws(Errno) {
    let result = ckvm_pin_current_thread(Int32(cpu))
    guard result == 0 else { throw Errno(rawValue: result) }
}

/// The host CPU the calling thread is running on right now, or nil. The C function is `sched_getcpu`.
public func currentCPU() -> Int? {
    let cpu = ckvm_current_cpu()
    return cpu >= 0 ? Int(cpu) : nil
}

extension Vcpu {
    /// How far this vCPU's TSC is ahead of the host's (guest TSC = host TSC + offset), so that guest `rdtsc`
    /// readings and host ones can be put on one time line (benchmarks). Nil where KVM cannot tell
    /// (`KVM_VCPU_TSC_CTRL` needs Linux 5.16). The corresponding ioctl is `KVM_GET_DEVICE_ATTR`.
    public func tscOffset() -> Int64? {
        var offset: UInt64 = 0
        return withUnsafeMutablePointer(to: &offset) { pointer -> Int64? in
            var attribute = kvm_device_attr()
            attribute.group = UInt32(KVM_VCPU_TSC_CTRL)
            attribute.attr = UInt64(KVM_VCPU_TSC_OFFSET)
            attribute.addr = UInt64(UInt(bitPattern: pointer))
            guard ckvm_ioctl_ptr(fd, CKVM_GET_DEVICE_ATTR, &attribute) == 0 else { return nil }
            return Int64(bitPattern: pointer.pointee)
        }
    }

    /// Marks this vCPU runnable, so it enters the guest at the state set by ``setBootState(_:)`` without
    /// waiting for INIT/SIPI from the boot vCPU (application processors start out waiting for them).
    /// The corresponding ioctl is `KVM_SET_MP_STATE`.
    public func setRunnable() throws(KvmError) {
        var state = kvm_mp_state(mp_state: UInt32(KVM_MP_STATE_RUNNABLE))
        _ = try kvmIoctl("KVM_SET_MP_STATE") { ckvm_ioctl_ptr(fd, CKVM_SET_MP_STATE, &state) }
    }
}
