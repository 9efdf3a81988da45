import CKvm
import EpollLoop
import Glibc

/// Pages of guest RAM written since the last look, per memory region: one bit per 4 KiB page.
public struct DirtyPages: Sendable, Equatable {
    public static let pageSize: UInt64 = 4096
    /// Per region (in ``GuestMemory/regions`` order), the page bitmap as 64-bit words.
    public var bitmaps: [[UInt64]]

    public init(bitmaps: [[UInt64]]) { self.bitmaps = bitmaps }

    /// How many pages are dirty.
    public var count: Int { bitmaps.reduce(0) { $0 + $1.reduce(0) { $0 + $1.nonzeroBitCount } } }

    /// The dirty pages as (region index, page index in the region), in order.
    public var pages: [(region: Int, page: Int)] {
        var result: [(Int, Int)] = []
        for (region, words) in bitmaps.enumerated() {
            for (w, word) in words.enumerated() where word != 0 {
                var bits = word
                while bits != 0 {
                    let bit = bits.trailingZeroBitCount
                    result.append((region, w * 64 + bit))
                    bits &= bits - 1
                }
            }
        }
        return result
    }

    /// Adds the pages dirty in `other` (the same memory's bitmaps).
    public mutating func formUnion(_ other: DirtyPages) {
        for (region, words) in other.bitmaps.enumerated() where region < bitmaps.count {
            for (w, word) in words.enumerated() where w < bitmaps[region].count { bitmaps[region][w] |= word }
        }
    }

    /// Every page of `memory`, as for the first round of a migration.
    public static func all(of memory: GuestMemory) -> DirtyPages {
        DirtyPages(bitmaps: memory.regions.map { region in
            let pages = Int(region.size / pageSize)
            var words = [UInt64](repeating: ~0, count: (pages + 63) / 64)
            if pages % 64 != 0 { words[words.count - 1] = (1 << UInt64(pages % 64)) - 1 }
            return words
        })
    }
}

extension Vm {
    /// Turns KVM's dirty-page logging on or off for every RAM slot (`KVM_SET_USER_MEMORY_REGION` again
    /// with `KVM_MEM_LOG_DIRTY_PAGES`). While on, ``fetchDirtyPages()`` reports pages written since the last
    /// call. Turning it on write-protects guest RAM in KVM's page tables, so writes cost a fault each.
    public func setDirtyLogging(_ on: Bool) throws(KvmError) {
        for (slot, region) in memory.regions.enumerated() {
            var mapping = kvm_userspace_memory_region(
                slot: UInt32(slot), flags: on ? UInt32(CKVM_MEM_LOG_DIRTY_PAGES) : 0,
                guest_phys_addr: region.start.rawValue, memory_size: region.size,
                userspace_addr: UInt64(region.hostAddress))
            _ = try kvmIoctl("KVM_SET_USER_MEMORY_REGION (dirty logging)") {
                ckvm_ioctl_ptr(fd, CKVM_SET_USER_MEMORY_REGION, &mapping)
            }
        }
    }

    /// The pages written since logging was turned on or since the last call (`KVM_GET_DIRTY_LOG`, which
    /// also clears the log and write-protects those pages again: each call starts a new round).
    public func fetchDirtyPages() throws(KvmError) -> DirtyPages {
        var bitmaps: [[UInt64]] = []
        for (slot, region) in memory.regions.enumerated() {
            let pages = Int(region.size / DirtyPages.pageSize)
            var words = [UInt64](repeating: 0, count: (pages + 63) / 64)
            let result = words.withUnsafeMutableBytes { buffer in
                var log = kvm_dirty_log()
                log.slot = UInt32(slot)
                // SAFETY: KVM writes one bit per page of the slot, rounded up to 64 bits: `words` holds that.
                ckvm_dirty_log_set_bitmap(&log, buffer.baseAddress)
                return Result { () throws(KvmError) in try kvmIoctl("KVM_GET_DIRTY_LOG") { ckvm_ioctl_ptr(fd, CKVM_GET_DIRTY_LOG, &log) } }
            }
            _ = try result.get()
            bitmaps.append(words)
        }
        return DirtyPages(bitmaps: bitmaps)
    }
}
