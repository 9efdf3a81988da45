import CKvm
@testable import Devices
import Glibc
import Testing

/// The host side of virtio-net as Cloud Hypervisor sets it up (docs/devices.md): a TAP the VMM creates
/// from `vmtap%d` with the default address, the given address on a named one, an existing persistent TAP's
/// address left alone, and every TAP the VMM created gone as soon as the last reference to it is.
@Suite(.enabled(if: access("/dev/net/tun", R_OK | W_OK) == 0 && getuid() == 0, "needs /dev/net/tun and root"))
struct TapDeviceTests {
    @Test func anUnnamedTapIsCreatedFromTheTemplateWithTheDefaultAddressAndRemovedWithItsLastReference() throws {
        var tap: TapDevice? = try TapDevice(name: nil, address: nil, netmask: nil)
        let name = try #require(tap?.name)
        #expect(name.hasPrefix("vmtap") && Int(name.dropFirst(5)) != nil, "\(name)")
        #expect(tap?.created == true)
        let state = try #require(InterfaceState.read(name))
        #expect(state.address == "192.168.249.1" && state.netmask == "255.255.255.0" && state.up, "\(state)")
        #expect(tap?.summary == "\(name) (created, 192.168.249.1/255.255.255.0, up)")
        tap = nil
        #expect(if_nametoindex(name) == 0, "\(name) outlived its descriptor")
    }

    @Test func aNamedTapGetsTheGivenAddressAndMaskDefaultsAlone() throws {
        let name = "avmt\(getpid() % 100_000)"
        do {
            let tap = try TapDevice(name: name, address: TapDevice.ipv4("10.201.3.1"), netmask: nil)
            #expect(tap.name == name && tap.created)
            let state = try #require(InterfaceState.read(name))
            #expect(state.address == "10.201.3.1" && state.netmask == "255.255.255.0" && state.up, "\(state)")
        }
        #expect(if_nametoindex(name) == 0)
    }

    @Test func anExistingPersistentTapKeepsItsAddressUnlessOneIsGiven() throws {
        let name = "avmp\(getpid() % 100_000)"
        try makePersistent(name, true)
        defer { try? makePersistent(name, false) }
        do {
            let first = try TapDevice(name: name, address: TapDevice.ipv4("10.201.4.1"), netmask: TapDevice.ipv4("255.255.0.0"))
            #expect(!first.created && first.name == name)
        }
        #expect(if_nametoindex(name) != 0, "a persistent TAP stays")
        let second = try TapDevice(name: name, address: nil, netmask: nil)
        #expect(second.ipv4 == nil && second.summary == "\(name) (existing, address unchanged, up)")
        let state = try #require(InterfaceState.read(name))
        #expect(state.address == "10.201.4.1" && state.netmask == "255.255.0.0" && state.up, "\(state)")
    }

    @Test func anInterfaceThatIsNotATapIsRefusedWithTheReason() {
        #expect(throws: VirtioError.self) { try TapDevice(name: "lo", address: nil, netmask: nil) }
        do {
            _ = try TapDevice(name: "lo", address: nil, netmask: nil)
        } catch {
            #expect(error.message.hasPrefix("cannot open the TAP interface: "), "\(error.message)")
        }
    }

    /// Creates (or un-persists) TAP `name` with TUNSETIFF + TUNSETPERSIST, as `ip tuntap add` does.
    private func makePersistent(_ name: String, _ persistent: Bool) throws {
        let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        var request = [UInt8](repeating: 0, count: 40)  // struct ifreq: name[16], then flags (short)
        for (i, byte) in name.utf8.enumerated() { request[i] = byte }
        let flags = UInt16(0x0002 | 0x1000)  // IFF_TAP | IFF_NO_PI
        request[16] = UInt8(flags & 0xFF); request[17] = UInt8(flags >> 8)
        let tunSetIff: UInt = 0x4004_54CA, tunSetPersist: UInt = 0x4004_54CB
        let set = request.withUnsafeMutableBytes { ckvm_ioctl_ptr(fd, tunSetIff, $0.baseAddress) }
        try #require(set == 0)
        try #require(ckvm_ioctl_arg(fd, tunSetPersist, persistent ? 1 : 0) == 0)
    }
}

/// An interface's IPv4 address, netmask and IFF_UP, from `getifaddrs`.
struct InterfaceState: CustomStringConvertible {
    var address: String?
    var netmask: String?
    var up = false

    static func read(_ name: String) -> InterfaceState? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return nil }
        defer { freeifaddrs(list) }
        var state: InterfaceState?
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            guard String(cString: current.pointee.ifa_name) == name else { continue }
            var found = state ?? InterfaceState()
            found.up = current.pointee.ifa_flags & UInt32(IFF_UP) != 0
            if let address = current.pointee.ifa_addr, address.pointee.sa_family == UInt16(AF_INET) {
                found.address = text(address)
                found.netmask = current.pointee.ifa_netmask.map(text)
            }
            state = found
        }
        return state
    }

    private static func text(_ address: UnsafeMutablePointer<sockaddr>) -> String {
        address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
            withUnsafeBytes(of: inet.pointee.sin_addr.s_addr) { $0.map { String($0) }.joined(separator: ".") }
        }
    }

    var description: String { "address \(address ?? "none"), netmask \(netmask ?? "none"), \(up ? "up" : "down")" }
}
