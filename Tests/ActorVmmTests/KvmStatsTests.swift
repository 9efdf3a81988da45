@testable import ActorVmm
import Testing

/// KVM's binary statistics: the parser on files built here (the real thing on /dev/kvm is below).
@Suite struct KvmStatsTests {
    /// A stats file as KVM lays it out: header, descriptors (`16 + nameSize` bytes each), data.
    static func file(nameSize: Int = 48, _ stats: [(name: String, size: UInt16, values: [UInt64])]) -> [UInt8] {
        var bytes: [UInt8] = []
        func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        let descOffset = 72, dataOffset = descOffset + stats.count * (16 + nameSize)
        for v in [0, UInt32(nameSize), UInt32(stats.count), 24, UInt32(descOffset), UInt32(dataOffset)] { put32(UInt32(v)) }
        bytes += [UInt8](repeating: 0, count: descOffset - bytes.count)  // the id string
        var offset: UInt32 = 0
        for stat in stats {
            put32(0)                                               // flags
            withUnsafeBytes(of: UInt16(0)) { bytes += $0 }         // exponent
            withUnsafeBytes(of: stat.size.littleEndian) { bytes += $0 }
            put32(offset); put32(0)                                // offset, bucket size
            let name = Array(stat.name.utf8)
            bytes += name + [UInt8](repeating: 0, count: nameSize - name.count)
            offset += UInt32(stat.size) * 8
        }
        for stat in stats { for v in stat.values { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } } }
        return bytes
    }

    @Test func parsesCountersAndSkipsHistograms() throws {
        let bytes = Self.file([("exits", 1, [1234]), ("halt_wait_hist", 4, [1, 2, 3, 4]), ("insn_emulation", 1, [1 << 40])])
        let stats = try KvmStats(parsing: bytes)
        #expect(stats.values.map(\.name) == ["exits", "insn_emulation"])
        #expect(stats["exits"] == 1234)
        #expect(stats["insn_emulation"] == 1 << 40)
        #expect(stats["halt_wait_hist"] == nil)
        #expect(stats.summary.hasPrefix("1234 exits (io ?, mmio ?"))
    }

    @Test func refusesTruncatedOrImplausibleFiles() {
        let bytes = Self.file([("exits", 1, [1]), ("io_exits", 1, [2])])
        for cut in [0, 10, 80, bytes.count - 1] {
            #expect(throws: KvmStatsError.self, "cut at \(cut)") { try KvmStats(parsing: Array(bytes.prefix(cut))) }
        }
        var huge = bytes
        huge[8] = 0xFF; huge[9] = 0xFF  // 65535 descriptors
        #expect(throws: KvmStatsError.self) { try KvmStats(parsing: huge) }
    }
}

/// On /dev/kvm: a member of the serialized lifecycle suite, whose descriptor census must see no other VM.
extension VcpuLifecycleTests {
    @Test func kvmStatsOfARealVcpu() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20)])
        let vm = try Vm(kvm: try Kvm(), memory: memory)
        let vcpu = try vm.createVcpu(id: 0)
        let stats = try vcpu.kvmStats()
        for name in ["exits", "io_exits", "mmio_exits", "halt_exits", "irq_injections", "insn_emulation"] {
            #expect(stats[name] != nil, "\(name) in \(stats.values.map(\.name))")
        }
        #expect(stats["exits"] == 0, "a vCPU that never ran has no exits")
    }
}
