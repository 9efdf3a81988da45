import CKvm
import EpollLoop
import Glibc

extension Kvm {
    /// The MSRs a snapshot saves: `KVM_GET_MSR_INDEX_LIST` (the MSRs KVM saves and emulates) without those
    /// Firecracker and Cloud Hypervisor leave out because restoring them is not meaningful or not allowed:
    /// the VMX capability MSRs (0x480–0x491, read-only reports of the host), the Hyper-V MSRs (0x4000_0000
    /// range: no Hyper-V enlightenment is offered) and MCG_CTL. Others the vCPU turns out not to support are
    /// dropped when read (``Vcpu/readMsrs(_:)``).
    public func msrIndexList() throws(KvmError) -> [UInt32] {
        var header = kvm_msr_list()
        // With nmsrs 0 the ioctl fails with E2BIG and reports how many there are.
        _ = ckvm_ioctl_ptr(fd, CKVM_GET_MSR_INDEX_LIST, &header)
        let count = Int(header.nmsrs)
        guard count > 0 else { return [] }
        var buffer = [UInt32](repeating: 0, count: count + 1)
        buffer[0] = UInt32(count)
        let result = buffer.withUnsafeMutableBytes { bytes in
            // SAFETY: `struct kvm_msr_list` is nmsrs (u32) followed by nmsrs u32 indices: count + 1 words.
            Result { () throws(KvmError) in
                try kvmIoctl("KVM_GET_MSR_INDEX_LIST") { ckvm_ioctl_ptr(fd, CKVM_GET_MSR_INDEX_LIST, bytes.baseAddress) }
            }
        }
        _ = try result.get()
        let returned = min(Int(buffer[0]), count)
        return buffer[1...returned].filter { !Self.isUnsaved($0) }
    }

    static func isUnsaved(_ index: UInt32) -> Bool {
        (0x480...0x491).contains(index) || (0x4000_0000...0x4000_00FF).contains(index) || index == 0x17B
    }
}

extension Vcpu {
    /// Reads `indices` with `KVM_GET_MSRS`. KVM stops at the first MSR it cannot read and returns how many
    /// it read; that one is dropped and the rest read again (Cloud Hypervisor's approach), so the result
    /// holds every MSR of the list this vCPU supports.
    public func readMsrs(_ indices: [UInt32]) throws(KvmError) -> [(index: UInt32, value: UInt64)] {
        var remaining = indices
        var result: [(index: UInt32, value: UInt64)] = []
        while !remaining.isEmpty {
            let entries = remaining.map { (index: $0, value: UInt64(0)) }
            let (count, values) = try msrIoctl("KVM_GET_MSRS", CKVM_GET_MSRS, entries)
            result += values.prefix(count)
            remaining.removeFirst(min(count + 1, remaining.count))  // the one at `count` failed
        }
        return result
    }

    /// Writes `msrs` with `KVM_SET_MSRS`, skipping any the host refuses; returns the refused indices.
    func writeMsrs(_ msrs: [(index: UInt32, value: UInt64)]) -> [UInt32] {
        var remaining = msrs
        var refused: [UInt32] = []
        while !remaining.isEmpty {
            let count = (try? msrIoctl("KVM_SET_MSRS", CKVM_SET_MSRS, remaining).0) ?? 0
            if count < remaining.count { refused.append(remaining[count].index) }
            remaining.removeFirst(min(count + 1, remaining.count))
        }
        return refused
    }

    /// One `KVM_GET_MSRS`/`KVM_SET_MSRS` over `entries`: the number processed and the entries after the call.
    private func msrIoctl(_ name: String, _ request: UInt,
                          _ entries: [(index: UInt32, value: UInt64)]) throws(KvmError) -> (Int, [(index: UInt32, value: UInt64)]) {
        let header = MemoryLayout<kvm_msrs>.size, stride = MemoryLayout<kvm_msr_entry>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + entries.count * stride, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: header + entries.count * stride)
        buffer.storeBytes(of: UInt32(entries.count), as: UInt32.self)
        for (i, entry) in entries.enumerated() {
            var raw = kvm_msr_entry()
            raw.index = entry.index
            raw.data = entry.value
            (buffer + header + i * stride).storeBytes(of: raw, as: kvm_msr_entry.self)
        }
        let count = try kvmIoctl(name) { ckvm_ioctl_ptr(fd, request, buffer) }
        let after = (0..<entries.count).map { i in
            let raw = (buffer + header + i * stride).load(as: kvm_msr_entry.self)
            return (index: raw.index, value: raw.data)
        }
        return (Int(count), after)
    }
}
