import CKvm
import EpollLoop
import Glibc

/// The host end of a virtio-net device: a TAP interface, opened (or created) and configured as Cloud
/// Hypervisor does (`net_util::open_tap`), and owned by this object.
///
/// - No name: the VMM creates a TAP from the template `vmtap%d` (the kernel picks the number).
/// - A name: that TAP is opened, or created under that name when it does not exist.
/// - A TAP created here gets an IPv4 address and netmask (the given ones, else Cloud Hypervisor's defaults
///   192.168.249.1 and 255.255.255.0) and is brought up. A persistent TAP that existed before keeps its
///   address unless one is given explicitly (Cloud Hypervisor never changes an existing TAP's address; an
///   explicit request is honoured here), and is brought up.
///
/// A TAP created here is not persistent: the kernel removes it when its last descriptor closes. The
/// descriptor is closed when the last reference to this object goes (`deinit`), so the interface disappears
/// with the VM, and on every path that drops an opened device before or after boot.
///
/// `Sendable`: every stored property is an immutable value.
public final class TapDevice: Sendable {
    /// The template the VMM creates unnamed TAPs from, as Cloud Hypervisor (`Tap::new`).
    public static let nameTemplate = "vmtap%d"
    /// Cloud Hypervisor's defaults for a TAP it configures (`default_netconfig_ip`/`_mask`, removed in its
    /// version 49, which assigns no address by default).
    public static let defaultAddress = "192.168.249.1", defaultNetmask = "255.255.255.0"
    /// Interface names are at most IFNAMSIZ - 1 bytes.
    public static let maxNameLength = 15

    public let fd: Int32
    /// The interface's name (for a template, the one the kernel chose).
    public let name: String
    /// True when this object created the interface (it goes away with the descriptor).
    public let created: Bool
    /// The IPv4 address and netmask set on it (network byte order), if any was set.
    public let ipv4: (address: UInt32, netmask: UInt32)?

    /// Opens or creates the TAP named `name` (nil: `vmtap%d`), configures it and brings it up. `address`
    /// and `netmask` are in network byte order. Errors give the reason; the caller names the option or field.
    public init(name: String?, address: UInt32?, netmask: UInt32?) throws(VirtioError) {
        var actual = [CChar](repeating: 0, count: 16)
        var existed: Int32 = 0
        let fd = ckvm_tap_open(name ?? Self.nameTemplate, &actual, actual.count, &existed)
        guard fd >= 0 else { throw VirtioError("cannot open the TAP interface: \(Errno.current)") }
        let actualName = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var ipv4: (UInt32, UInt32)?
        if existed == 0 || address != nil || netmask != nil {
            ipv4 = (address ?? Self.ipv4(Self.defaultAddress), netmask ?? Self.ipv4(Self.defaultNetmask))
        }
        guard ckvm_if_configure(actualName, ipv4?.0 ?? 0, ipv4?.1 ?? 0, ipv4 == nil ? 0 : 1) == 0 else {
            let error = Errno.current
            close(fd)
            throw VirtioError("cannot configure \(actualName): \(error)")
        }
        self.fd = fd
        self.name = actualName
        self.created = existed == 0
        self.ipv4 = ipv4.map { (address: $0.0, netmask: $0.1) }
    }

    /// Takes ownership of a descriptor that is already open and stands in for a TAP (tests use one end of a
    /// datagram socketpair: each send is one frame).
    init(adopting fd: Int32, name: String) {
        self.fd = fd
        self.name = name
        created = false
        ipv4 = nil
    }

    deinit { close(fd) }

    /// "vmtap0 (created, 192.168.249.1/255.255.255.0, up)", for the log.
    public var summary: String {
        let address = ipv4.map { "\(Self.text($0.address))/\(Self.text($0.netmask))" } ?? "address unchanged"
        return "\(name) (\(created ? "created" : "existing"), \(address), up)"
    }

    /// A dotted IPv4 address in network byte order (for constants known to be valid).
    static func ipv4(_ text: String) -> UInt32 {
        var address = in_addr()
        return inet_pton(AF_INET, text, &address) == 1 ? address.s_addr : 0
    }

    /// Network byte order → dotted text.
    static func text(_ address: UInt32) -> String {
        withUnsafeBytes(of: address) { $0.map { String($0) }.joined(separator: ".") }
    }
}
