import Foundation
import Glibc
import Testing

/// `--net num_queues=4` (two queue pairs, Cloud Hypervisor's syntax) with the test guest's `net` check: the
/// VMM opens a multi-queue TAP, the guest's driver (which knows one pair and no offloads) exchanges frames
/// on pair 0, and the seccomp filters allow what the device does with the TAP's queues.
extension VirtioTests {
    @Test func aMultiQueueTapCarriesTheGuestsFramesOnItsFirstPair() throws {
        let (result, peer) = Self.netCheckOnACreatedTap(net: "tap=,mac=,ip=,mask=,num_queues=4,queue_size=128",
                                                        ["--cpus", "boot=2"])
        let context = "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)"
        #expect(result.status == 0 && !result.timedOut, "\(context)")
        #expect(result.lines.contains("TESTGUEST DONE pass=1 fail=0"), "\(context)")
        #expect(result.lines.contains { $0.hasPrefix("TEST net PASS mac=") && $0.contains(" tx=ok rx=ok") }, "\(context)")
        #expect(result.stderr.contains(", 2 queues"), "the TAP has a queue per pair: \(context)")
        #expect(result.stderr.contains("driver features"), "\(context)")
        #expect(peer.sawGuestFrame, "no ACTORVMM-NET-TX frame; injected \(peer.injected) frames")
    }
}
