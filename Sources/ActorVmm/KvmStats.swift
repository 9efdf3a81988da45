import CKvm
import EpollLoop
import Glibc

/// KVM's own per-vCPU statistics, read through the binary stats interface (`KVM_GET_STATS_FD`,
/// Documentation/virt/kvm/api.rst "KVM_GET_STATS_FD"): exits by kind, instructions the host emulated,
/// interrupts injected, page faults. They show where a guest's time goes inside KVM, which the VMM's own
/// counters cannot — on a host that emulates ring-0 code (docs/compat.md), most of it.
///
/// The file holds a header, then one descriptor per statistic (flags, exponent, size, offset, bucket size,
/// name), then the values: `size` 64-bit words each, at `data_offset + offset`. Only single-word values
/// (counters and peaks, not histograms) are read.
public struct KvmStats: Sendable, Equatable {
    /// Name → value, in the kernel's order.
    public let values: [(name: String, value: UInt64)]

    public static func == (a: KvmStats, b: KvmStats) -> Bool {
        a.values.elementsEqual(b.values) { $0.name == $1.name && $0.value == $1.value }
    }

    public subscript(name: String) -> UInt64? { values.first { $0.name == name }?.value }

    /// Parses a whole stats file as read from the descriptor: `header` + descriptors + data.
    /// Throws a one-line description when the layout does not hold together.
    public init(parsing bytes: [UInt8]) throws(KvmStatsError) {
        func u32(_ at: Int) throws(KvmStatsError) -> UInt32 {
            guard at >= 0, at + 4 <= bytes.count else { throw KvmStatsError("truncated at byte \(at)") }
            return UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
        }
        func u16(_ at: Int) throws(KvmStatsError) -> UInt16 {
            guard at >= 0, at + 2 <= bytes.count else { throw KvmStatsError("truncated at byte \(at)") }
            return UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
        }
        func u64(_ at: Int) throws(KvmStatsError) -> UInt64 { UInt64(try u32(at)) | UInt64(try u32(at + 4)) << 32 }
        // struct kvm_stats_header { flags, name_size, num_desc, id_offset, desc_offset, data_offset }
        let nameSize = Int(try u32(4)), count = Int(try u32(8))
        let descOffset = Int(try u32(16)), dataOffset = Int(try u32(20))
        guard nameSize > 0, nameSize <= 256, count <= 4096 else {
            throw KvmStatsError("implausible header: \(count) statistics, names of \(nameSize) bytes")
        }
        // struct kvm_stats_desc { u32 flags; s16 exponent; u16 size; u32 offset; u32 bucket_size; char name[] }
        let stride = 16 + nameSize
        var values: [(String, UInt64)] = []
        for index in 0..<count {
            let desc = descOffset + index * stride
            let size = try u16(desc + 6), offset = Int(try u32(desc + 8))
            guard desc + stride <= bytes.count else { throw KvmStatsError("descriptor \(index) is past the end") }
            let nameBytes = bytes[(desc + 16)..<(desc + stride)].prefix { $0 != 0 }
            guard size == 1 else { continue }
            values.append((String(decoding: nameBytes, as: UTF8.self), try u64(dataOffset + offset)))
        }
        self.values = values
    }

    /// Reads the statistics of the vCPU or VM behind `fd` (a KVM vCPU or VM descriptor).
    public static func read(kvmObject fd: Int32) throws(KvmStatsError) -> KvmStats {
        let statsFD = ckvm_ioctl(fd, CKVM_GET_STATS_FD)
        guard statsFD >= 0 else { throw KvmStatsError("KVM_GET_STATS_FD: \(Errno.current)") }
        defer { close(statsFD) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(statsFD, $0.baseAddress, $0.count, off_t(bytes.count)) }
            guard n >= 0 else { throw KvmStatsError("reading the stats: \(Errno.current)") }
            if n == 0 || bytes.count > 1 << 20 { break }
            bytes += chunk[0..<n]
        }
        return try KvmStats(parsing: bytes)
    }

    /// One line: the exits by kind, instructions emulated by the host, interrupts injected, page faults.
    public var summary: String {
        func v(_ name: String) -> String { self[name].map(String.init) ?? "?" }
        return "\(v("exits")) exits (io \(v("io_exits")), mmio \(v("mmio_exits")), halt \(v("halt_exits")), "
            + "interrupt \(v("irq_exits")), signal \(v("signal_exits"))), \(v("insn_emulation")) instructions emulated by KVM, "
            + "\(v("irq_injections")) interrupts injected, \(v("pf_taken")) page faults"
    }
}

public struct KvmStatsError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension Vcpu {
    /// This vCPU's KVM statistics (``KvmStats``). Read while the vCPU is not in `KVM_RUN` or not: the
    /// values are the kernel's counters at that moment.
    public func kvmStats() throws(KvmStatsError) -> KvmStats { try KvmStats.read(kvmObject: fd) }
}
