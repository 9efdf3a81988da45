import Glibc

extension GuestMemory {
    /// Gives the host back the pages of [address, address+count) (virtio-mem's unplug): `MADV_DONTNEED` on
    /// the private anonymous mapping, so the range reads as zero afterwards and costs no host memory until
    /// it is written again. The range must lie within one region and be page-aligned; anything else is
    /// refused before any page is touched.
    public func discard(at address: GuestAddress, count: Int) throws(GuestMemoryError) {
        guard count >= 0, address.rawValue & 0xFFF == 0, count & 0xFFF == 0 else { throw .outOfRange(address, count: count) }
        guard count > 0 else { return }
        guard GuestMemory.dropPages(try hostPointer(address, count), count) else {
            throw .invalidLayout("madvise(MADV_DONTNEED) at \(address) of \(count) bytes failed: errno \(errno)")
        }
    }

    /// Drops the whole pages at [pointer, pointer+count) (page-aligned, inside one region, which is a private
    /// anonymous mapping): they read as zero afterwards and cost no host memory until written. False (errno
    /// set) if the kernel refused. For ``discard(at:count:)`` and ``zero(at:count:)``.
    static func dropPages(_ pointer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        // SAFETY: the callers checked with hostPointer that the range lies inside one live mapping of guest
        // RAM; MADV_DONTNEED only drops its pages.
        madvise(pointer, count, MADV_DONTNEED) == 0
    }
}
