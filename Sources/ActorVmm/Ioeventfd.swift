import CKvm
import Glibc

/// Doorbells without exits: a guest write to an address signals an eventfd inside KVM (`KVM_IOEVENTFD`).
extension Vm {
    /// Makes guest writes to [address, address+length) signal `eventFD` inside KVM, without an exit.
    /// `length` 0 matches any access width (needs `KVM_CAP_IOEVENTFD_ANY_LENGTH`). The corresponding ioctl
    /// is `KVM_IOEVENTFD`.
    public func registerIoeventfd(eventFD: Int32, address: UInt64, length: UInt32, pio: Bool = false) throws(KvmError) {
        var request = kvm_ioeventfd()
        request.addr = address
        request.len = length
        request.fd = eventFD
        request.flags = pio ? CKVM_IOEVENTFD_FLAG_PIO : 0
        _ = try kvmIoctl("KVM_IOEVENTFD") { ckvm_ioctl_ptr(fd, CKVM_IOEVENTFD, &request) }
    }

    /// Undoes ``registerIoeventfd(eventFD:address:length:pio:)``.
    public func unregisterIoeventfd(eventFD: Int32, address: UInt64, length: UInt32, pio: Bool = false) {
        var request = kvm_ioeventfd()
        request.addr = address
        request.len = length
        request.fd = eventFD
        request.flags = (pio ? CKVM_IOEVENTFD_FLAG_PIO : 0) | CKVM_IOEVENTFD_FLAG_DEASSIGN
        _ = ckvm_ioctl_ptr(fd, CKVM_IOEVENTFD, &request)
    }
}
