import Foundation
import Testing

/// Hotplug with Linux user space in the nested tier (docs/hotplug.md): the hotplug guest
/// (Tests/Linux/hotplug-guest.sh) driven through actor-vmm-remote by Tests/Nested/hotplug-flow.sh.
extension NestedKvmTests {
    /// The guest's state lines ("ACTORVMM-HOTPLUG cpus=… mem_kb=… disks=… nets=…", one per change) as field
    /// dictionaries, in order.
    static func hotplugStates(_ check: NestedHarness.Check) -> [[String: String]] {
        check.lines.map(\.text).filter { $0.hasPrefix("ACTORVMM-HOTPLUG ") }.map { line in
            var fields: [String: String] = [:]
            for word in line.split(separator: " ").dropFirst() {
                let parts = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
            }
            return fields
        }
    }

    /// CPUs 2 → 4 → 2 online, MemTotal grown by the 128 MiB of `resize --memory 384M`, a disk added (the guest
    /// reads L1's pattern, writes its own, reads it back; L1 finds it in the file), removed and gone from
    /// vm.info, a NIC added as eth1, and the power button: busybox acpid powers the guest off, the VMM exits 0.
    @Test func linuxHotplugWithActorVmmRemote() async throws {
        let check = try await NestedHarness.check("hotplug")
        Self.expectCleanExit(check)
        for step in ["socket", "ready", "resize-cpus-4", "cpus-0-3", "resize-cpus-2", "cpus-0-1",
                     "resize-memory-384M", "memtotal-grew", "add-disk", "disk-appeared", "disk-io", "add-net", "eth1",
                     "remove-device", "disk-gone-in-guest", "disk-gone-from-info", "disk-file-has-guest-write",
                     "power-button", "guest-saw-power-button", "vmm-exit-0"] {
            #expect(check.first(containing: "HOTPLUG STEP \(step) ok") != nil, "step \(step): \(check.context)")
        }
        // The guest's own record, in order: 4 CPUs online, then 2 again; RAM; the disk; eth1.
        let states = Self.hotplugStates(check)
        let four = try #require(states.firstIndex { $0["cpus"] == "0-3" }, "CPUs 0-3 online: \(check.context)")
        #expect(states[(four + 1)...].contains { $0["cpus"] == "0-1" }, "back to CPUs 0-1: \(check.context)")
        let memory = states.compactMap { $0["mem_kb"].flatMap { Int($0) } }
        let grown = (memory.last ?? 0) - (memory.first ?? 0)
        #expect((120 << 10)...(128 << 10) ~= grown, "MemTotal grew by 128 MiB, not \(grown) KiB: \(check.context)")
        #expect(states.contains { $0["disks"]?.hasPrefix("vd") == true }, "\(check.context)")
        #expect(states.last?["disks"] == "", "the disk is gone: \(check.context)")
        #expect(states.contains { $0["nets"]?.hasPrefix("eth0,eth1,") == true }, "eth1: \(check.context)")
        let disk = try #require(check.first(containing: "ACTORVMM-HOTPLUG-DISK ")?.text, "\(check.context)")
        let fields = Dictionary(disk.split(separator: " ").compactMap { word -> (String, String)? in
            let parts = word.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { first, _ in first })
        #expect(fields["read"]?.hasPrefix("ACTORVMM-L1-DISK-PATTERN-") == true, "L1's pattern: \(disk)")
        #expect(fields["wrote"]?.hasPrefix("ACTORVMM-GUEST-WROTE-vd") == true && fields["readback"] == fields["wrote"],
                "written and read back: \(disk)")
        // The VMM's side: the guest ejected the disk, vm.info no longer has it but has the NIC added.
        #expect(check.first(containing: "'hotdisk' removed (the guest ejected it)") != nil, "\(check.context)")
        // "HOTPLUG INFO ids: …": every id in vm.info (config and device tree) after the removal.
        let info = try #require(check.first(containing: "HOTPLUG INFO ids: ")?.text, "\(check.context)")
        #expect(!info.contains("hotdisk") && info.contains(#""id":"hotnet""#), "vm.info after the removal: \(info)")
        #expect(check.first(containing: "ACTORVMM-POWER-BUTTON") != nil, "\(check.context)")
        check.report("Linux hotplug (CPUs, RAM, disk, NIC, power button)", marker: "HOTPLUG STEP vmm-exit-0")
    }
}

extension NestedKvmTests {
    /// virtio-mem (`--memory size=256M,hotplug_method=virtio-mem,hotplug_size=512M`, Tests/Nested/virtio-mem-flow.sh):
    /// Linux's virtio_mem driver binds the device; `resize --memory 512M` → it plugs 256 MiB and the kernel
    /// onlines them (MemTotal ≥ 250 MiB larger), vm.info's hotplugged_size is 256 MiB, vm.counters' plugged_size
    /// 256 MiB and memory_actual_size 512 MiB; `resize --memory 256M` → it unplugs them (MemTotal back within
    /// 2 MiB), plugged_size 0, memory_actual_size 256 MiB; the power button ends the guest.
    @Test func linuxVirtioMemWithActorVmmRemote() async throws {
        let check = try await NestedHarness.check("hotplug-virtio-mem")
        Self.expectCleanExit(check)
        for step in ["socket", "ready", "nothing-plugged-at-boot", "info-actual-256M", "resize-memory-512M",
                     "memtotal-grew", "info-hotplugged-256M", "counters-plugged-256M", "info-actual-512M",
                     "resize-memory-256M", "memtotal-shrank", "counters-plugged-0", "info-no-hotplugged",
                     "info-actual-256M-again", "power-button", "vmm-exit-0"] {
            #expect(check.first(containing: "VIRTIO-MEM STEP \(step) ok") != nil, "step \(step): \(check.context)")
        }
        // The driver's own lines (dmesg, printed by the guest's init): it found the 512 MiB region and
        // plugged nothing before the resize.
        let driver = check.lines.map(\.text).filter { $0.hasPrefix("ACTORVMM-DMESG ") && $0.contains(" virtio_mem virtio") }
        #expect(driver.contains { $0.hasSuffix("region size: 0x20000000") }, "the driver probed: \(check.context)")
        #expect(driver.contains { $0.hasSuffix("plugged size: 0x0") }, "\(check.context)")
        // The guest's MemTotal, in order: boot, +256 MiB, back.
        let memory = Self.hotplugStates(check).compactMap { $0["mem_kb"].flatMap { Int($0) } }
        let boot = try #require(check.lines.lazy.compactMap { line -> Int? in
            guard line.text.hasPrefix("ACTORVMM-HOTPLUG-READY ") else { return nil }
            return line.text.split(separator: " ").first { $0.hasPrefix("mem_kb=") }.flatMap { Int($0.dropFirst(7)) }
        }.first, "the ready line: \(check.context)")
        let peak = memory.max() ?? 0
        #expect((250 << 10)...(256 << 10) ~= peak - boot, "MemTotal grew by 256 MiB, not \(peak - boot) KiB: \(check.context)")
        #expect(abs((memory.last ?? 0) - boot) <= 2 << 10, "MemTotal back to \(boot) KiB, not \(memory.last ?? 0): \(check.context)")
        check.report("Linux virtio-mem (grow, shrink, power button)", marker: "VIRTIO-MEM STEP vmm-exit-0")
    }
}
