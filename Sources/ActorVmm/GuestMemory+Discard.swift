import Glibc

extension GuestMemory {
    /// Gives the host back the pages of [address, address+count) (virtio-mem's unplug): `MADV_DONTNEED` on
    /// the private anonymous mapping, so the range reads as zero afterwards and costs no host memory until
    /// it is written again. The range must lie within one region and be page-aligned; anything else is
    /// refused before any page is touched.
    public func discard(at address: GuestAddress, count: Int) throws(GuestMemoryError) {
        guard count >= 0, address.rawValue & 0xFFF == 0, count & 0xFFF == 0 else { throw .outOfRange(address, count: count) }
        guard count > 0 else { return }
        let pointer = try hostPointer(address, count)
        // SAFETY: [pointer, pointer+count) lies inside one live anonymous mapping of guest RAM (checked by
        // hostPointer); MADV_DONTNEED only drops its pages, which then read as zero.
        guard madvise(pointer, count, MADV_DONTNEED) == 0 else {
            throw .invalidLayout("madvise(MADV_DONTNEED) at \(address) of \(count) bytes failed: errno \(errno)")
        }
    }
}
