@testable import Cli
import Glibc
import Testing

/// Opening the host side of the devices is all or nothing: when a later device cannot be opened, the TAPs
/// the VMM created for earlier ones are gone again (no interface outlives a refused configuration).
@Suite(.enabled(if: access("/dev/net/tun", R_OK | W_OK) == 0 && getuid() == 0, "needs /dev/net/tun and root"))
struct PreparedDevicesTests {
    @Test func aFailureAfterTheNetDeviceLeavesNoTapBehind() throws {
        let name = "avmf\(getpid() % 100_000)"
        var config = VmConfig(payload: .init(kernel: "/k"))
        config.net = [VmConfig.Net(tap: name)]
        config.rng = VmConfig.Rng(source: "/nonexistent/rng-source")
        #expect(throws: PrepareError.self) { try PreparedDevices.open(config) }
        #expect(if_nametoindex(name) == 0, "\(name) was left behind by a failed open")

        // The same devices without the bad rng source: the TAP exists while they are held, and goes with them.
        config.rng = nil
        do {
            let prepared = try PreparedDevices.open(config)
            #expect(prepared.virtio.count == 1 && if_nametoindex(name) != 0)
        }
        #expect(if_nametoindex(name) == 0, "\(name) outlived the prepared devices")
    }
}
