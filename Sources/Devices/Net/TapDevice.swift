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
/// `Sendable`: every stored property is an immutable value; the ioctls it makes change the kernel's state only.
public final class TapDevice: Sendable {
    /// The template the VMM creates unnamed TAPs from, as Cloud Hypervisor (`Tap::new`).
    public static let nameTemplate = "vmtap%d"
    /// Cloud Hypervisor's defaults for a TAP it configures (`default_netconfig_ip`/`_mask`, removed in its
    /// version 49, which assigns no address by default).
    public static let defaultAddress = "192.168.249.1", defaultNetmask = "255.255.255.0"
    /// Interface names are at most IFNAMSIZ - 1 bytes.
    public static let maxNameLength = 15

    /// The first queue's descriptor (the only one unless the TAP has several queues).
    public var fd: Int32 { queueFDs[0] }
    /// One descriptor per queue of the interface (IFF_MULTI_QUEUE when there are several).
    public let queueFDs: [Int32]
    /// The interface's name (for a template, the one the kernel chose).
    public let name: String
    /// True when this object created the interface (it goes away with the descriptor).
    public let created: Bool
    /// The IPv4 address and netmask set on it (network byte order), if any was set.
    public let ipv4: (address: UInt32, netmask: UInt32)?
    /// True for descriptors adopted by a test (not a TAP: no ioctl works on them).
    let adopted: Bool
    /// The TUNSETOFFLOAD flags this kernel accepts (`CKVM_TUN_F_*`), probed at open; the TAP is left with none.
    public let supportedOffloads: UInt32

    /// Opens or creates the TAP named `name` (nil: `vmtap%d`) with `queues` queues (IFF_MULTI_QUEUE when
    /// more than one), configures it and brings it up. `address` and `netmask` are in network byte order.
    /// Errors give the reason; the caller names the option or field.
    public init(name: String?, address: UInt32?, netmask: UInt32?, queues: Int = 1) throws(VirtioError) {
        precondition(queues >= 1)
        var actual = [CChar](repeating: 0, count: 16)
        var existed: Int32 = 0
        var fds: [Int32] = []
        func closeAll() { for fd in fds { close(fd) } }
        let multiQueue: Int32 = queues > 1 ? 1 : 0
        let first = ckvm_tap_open_queue(name ?? Self.nameTemplate, multiQueue, &actual, actual.count, &existed)
        guard first >= 0 else { throw VirtioError("cannot open the TAP interface: \(Self.openProblem(Errno.current, queues: queues))") }
        fds.append(first)
        let actualName = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var ignored: Int32 = 0
        while fds.count < queues {
            let fd = ckvm_tap_open_queue(actualName, 1, nil, 0, &ignored)
            guard fd >= 0 else {
                let error = Errno.current
                closeAll()
                throw VirtioError("cannot open queue \(fds.count) of \(actualName): \(error)")
            }
            fds.append(fd)
        }
        var ipv4: (UInt32, UInt32)?
        if existed == 0 || address != nil || netmask != nil {
            ipv4 = (address ?? Self.ipv4(Self.defaultAddress), netmask ?? Self.ipv4(Self.defaultNetmask))
        }
        guard ckvm_if_configure(actualName, ipv4?.0 ?? 0, ipv4?.1 ?? 0, ipv4 == nil ? 0 : 1) == 0 else {
            let error = Errno.current
            closeAll()
            throw VirtioError("cannot configure \(actualName): \(error)")
        }
        self.queueFDs = fds
        self.name = actualName
        self.created = existed == 0
        self.ipv4 = ipv4.map { (address: $0.0, netmask: $0.1) }
        self.supportedOffloads = Self.probeOffloads(first)
        adopted = false
    }

    /// Takes ownership of descriptors that are already open and stand in for a TAP's queues (tests use one
    /// end of a datagram socketpair per queue: each send is one frame). No offload can be set on them.
    init(adopting fds: [Int32], name: String) {
        precondition(!fds.isEmpty)
        queueFDs = fds
        self.name = name
        created = false
        ipv4 = nil
        supportedOffloads = 0
        adopted = true
    }

    convenience init(adopting fd: Int32, name: String) { self.init(adopting: [fd], name: name) }

    deinit { for fd in queueFDs { close(fd) } }

    /// What the TAP may hand to user space: `CKVM_TUN_F_*` flags (TUNSETOFFLOAD; the setting is the
    /// interface's, whichever queue sets it). Nil, or the error.
    public func setOffloads(_ flags: UInt32) -> Errno? {
        if adopted { return flags == 0 ? nil : Errno(rawValue: ENOTTY) }
        return ckvm_ioctl_arg(fd, CKVM_TUNSETOFFLOAD, UInt(flags)) == 0 ? nil : Errno.current
    }

    /// Attaches or detaches queue `index` (TUNSETQUEUE): the kernel steers no frame to a detached queue.
    public func setQueue(_ index: Int, attached: Bool) -> Errno? {
        ckvm_tap_set_queue(queueFDs[index], attached ? 1 : 0) == 0 ? nil : Errno.current
    }

    /// The offload flags the kernel accepts: every flag it knows, or without UFO (older kernels refused
    /// it between 4.14 and its return), or none; the TAP is left with none.
    private static func probeOffloads(_ fd: Int32) -> UInt32 {
        let all = CKVM_TUN_F_CSUM | CKVM_TUN_F_TSO4 | CKVM_TUN_F_TSO6 | CKVM_TUN_F_TSO_ECN | CKVM_TUN_F_UFO
        var supported: UInt32 = 0
        for candidate in [all, all & ~CKVM_TUN_F_UFO, CKVM_TUN_F_CSUM] where ckvm_ioctl_arg(fd, CKVM_TUNSETOFFLOAD, UInt(candidate)) == 0 {
            supported = candidate
            break
        }
        _ = ckvm_ioctl_arg(fd, CKVM_TUNSETOFFLOAD, 0)
        return supported
    }

    /// The reason a TAP could not be opened; EINVAL for several queues usually means an existing TAP made
    /// without `multi_queue`.
    private static func openProblem(_ error: Errno, queues: Int) -> String {
        guard queues > 1, error == Errno(rawValue: EINVAL) else { return "\(error)" }
        return "\(error) (an existing TAP needs `ip tuntap add ... multi_queue` for \(queues) queues)"
    }


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
