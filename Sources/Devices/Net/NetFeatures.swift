import CKvm

/// virtio-net feature bits (virtio 1.2 §5.1.3) and how the acked ones become the TAP's offloads.
public enum NetFeature {
    /// The device takes frames with a partial checksum (the guest leaves it to the host).
    public static let csum: UInt64 = 1 << 0
    /// The driver takes frames with a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    public static let guestCsum: UInt64 = 1 << 1
    /// The driver may change the guest offloads later (`VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET`).
    public static let ctrlGuestOffloads: UInt64 = 1 << 2
    public static let mac: UInt64 = 1 << 5
    /// The driver takes TSO frames (IPv4, IPv6, with ECN) and UFO frames.
    public static let guestTso4: UInt64 = 1 << 7, guestTso6: UInt64 = 1 << 8
    public static let guestEcn: UInt64 = 1 << 9, guestUfo: UInt64 = 1 << 10
    /// The device takes TSO frames (IPv4, IPv6, with ECN) and UFO frames.
    public static let hostTso4: UInt64 = 1 << 11, hostTso6: UInt64 = 1 << 12
    public static let hostEcn: UInt64 = 1 << 13, hostUfo: UInt64 = 1 << 14
    /// A received frame may span several receive buffers (`num_buffers` in the header).
    public static let mergeableRxBuffers: UInt64 = 1 << 15
    public static let status: UInt64 = 1 << 16
    public static let ctrlVq: UInt64 = 1 << 17
    public static let multiQueue: UInt64 = 1 << 22

    /// The guest offloads: what `VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET` may switch.
    public static let guestOffloads = guestCsum | guestTso4 | guestTso6 | guestEcn | guestUfo

    /// What a device over a TAP accepting `tapOffloads` (`CKVM_TUN_F_*`) offers, with `queuePairs` pairs
    /// and Cloud Hypervisor's `offload_csum`, `offload_tso`, `offload_ufo` (TSO and UFO need checksum
    /// offload). The transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX.
    static func offered(tapOffloads: UInt32, queuePairs: Int, checksum: Bool = true, tso: Bool = true,
                        ufo: Bool = true) -> UInt64 {
        var features = mac | status | mergeableRxBuffers | ctrlVq
        if queuePairs > 1 { features |= multiQueue }
        guard checksum else { return features }
        // Transmit offloads need no TAP setting: the kernel takes any virtio_net_hdr a writer gives it.
        features |= csum | ctrlGuestOffloads
        if tso { features |= hostTso4 | hostTso6 | hostEcn }
        if ufo { features |= hostUfo }
        guard tapOffloads & CKVM_TUN_F_CSUM != 0 else { return features }
        features |= guestCsum
        if tso && tapOffloads & (CKVM_TUN_F_TSO4 | CKVM_TUN_F_TSO6) == CKVM_TUN_F_TSO4 | CKVM_TUN_F_TSO6 {
            features |= guestTso4 | guestTso6
            if tapOffloads & CKVM_TUN_F_TSO_ECN != 0 { features |= guestEcn }
        }
        if ufo && tapOffloads & CKVM_TUN_F_UFO != 0 { features |= guestUfo }
        return features
    }

    /// The TUNSETOFFLOAD flags for the guest offloads in `features`: what the TAP may hand to the guest.
    /// Without GUEST_CSUM nothing (the kernel refuses TSO or UFO without checksum offload).
    static func tapOffloads(_ features: UInt64) -> UInt32 {
        guard features & guestCsum != 0 else { return 0 }
        var flags = CKVM_TUN_F_CSUM
        if features & guestTso4 != 0 { flags |= CKVM_TUN_F_TSO4 }
        if features & guestTso6 != 0 { flags |= CKVM_TUN_F_TSO6 }
        if features & guestEcn != 0 && features & (guestTso4 | guestTso6) != 0 { flags |= CKVM_TUN_F_TSO_ECN }
        if features & guestUfo != 0 { flags |= CKVM_TUN_F_UFO }
        return flags
    }

    /// True when the TAP may hand the guest frames of up to 64 KiB (TSO or UFO acked).
    static func receivesLargeFrames(_ features: UInt64) -> Bool {
        tapOffloads(features) & (CKVM_TUN_F_TSO4 | CKVM_TUN_F_TSO6 | CKVM_TUN_F_UFO) != 0
    }
}
