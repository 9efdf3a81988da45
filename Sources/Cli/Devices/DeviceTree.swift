/// A PCI address: segment, bus, device (slot), function. ActorVMM has one segment and one bus.
public struct PciBdf: Hashable, Sendable, CustomStringConvertible {
    public var segment: UInt16 = 0
    public var bus: UInt8 = 0
    public var device: UInt8
    public var function: UInt8 = 0

    public init(device: UInt8) { self.device = device }

    /// `0000:00:01.0`, as Cloud Hypervisor writes it.
    public var description: String {
        func hex(_ value: UInt64, _ digits: Int) -> String {
            let text = String(value, radix: 16)
            return String(repeating: "0", count: max(0, digits - text.count)) + text
        }
        return "\(hex(UInt64(segment), 4)):\(hex(UInt64(bus), 2)):\(hex(UInt64(device), 2)).\(function)"
    }
}

/// A guest-visible resource a device occupies (Cloud Hypervisor's `Resource`, the kinds ActorVMM uses).
public enum DeviceResource: Equatable, Sendable {
    /// An I/O-port range on the PIO bus.
    case pioRange(base: UInt64, size: UInt64)
    /// A range on the MMIO bus that is not a BAR (an MMCONFIG window, the test device's page).
    case mmioRange(base: UInt64, size: UInt64)
    /// A memory BAR of a PCI function.
    case pciBar(index: Int, base: UInt64, size: UInt64)
    /// An MSI(-X) vector: the GSI KVM routes it through.
    case msiVector(gsi: UInt32)
}

/// One node of the ``DeviceTree`` (Cloud Hypervisor's `DeviceNode`): a device by id, what it occupies, and
/// where it hangs. A virtio device is two nodes, as in Cloud Hypervisor: the device (`_disk0`, no resources)
/// and its PCI transport (`_virtio-pci-_disk0`: the BDF, the BAR, the vectors), the device's only child.
///
/// Beyond Cloud Hypervisor's fields (the ones `vm.info` shows), a node records what a snapshot or a hot
/// unplug needs to know: the doorbell ioeventfds registered with KVM for it and the event loop its actor
/// runs on.
public struct DeviceNode: Equatable, Sendable {
    /// A `KVM_IOEVENTFD` registration: guest writes of `length` bytes (0: any) at `address` signal an eventfd.
    public struct Ioeventfd: Equatable, Sendable {
        public let address: UInt64
        public let length: UInt32
    }

    public let id: String
    public var resources: [DeviceResource]
    public var parent: String?
    public var children: [String]
    public var pciBdf: PciBdf?
    public var ioeventfds: [Ioeventfd] = []
    /// The name of the event loop the device's actor runs on (nil: no actor of its own).
    public var loop: String?

    public init(id: String, resources: [DeviceResource] = [], parent: String? = nil, children: [String] = [],
                pciBdf: PciBdf? = nil, ioeventfds: [Ioeventfd] = [], loop: String? = nil) {
        self.id = id
        self.resources = resources
        self.parent = parent
        self.children = children
        self.pciBdf = pciBdf
        self.ioeventfds = ioeventfds
        self.loop = loop
    }
}

/// Every device of a VM by id, in the order they were attached: what `vm.info` reports as `device_tree`,
/// and what a snapshot walks.
public struct DeviceTree: Equatable, Sendable {
    public private(set) var nodes: [DeviceNode] = []

    public init() {}

    public subscript(id: String) -> DeviceNode? { nodes.first { $0.id == id } }

    public func contains(_ id: String) -> Bool { nodes.contains { $0.id == id } }

    /// Adds `node`; its parent (if any) lists it among its children. The id must be new.
    mutating func insert(_ node: DeviceNode) {
        precondition(!contains(node.id), "device id \(node.id) is already in the tree")
        nodes.append(node)
        if let parent = node.parent, let index = nodes.firstIndex(where: { $0.id == parent }),
           !nodes[index].children.contains(node.id) {
            nodes[index].children.append(node.id)
        }
    }

    /// Changes the node `id` (if there is one) in place.
    mutating func update(_ id: String, _ body: (inout DeviceNode) -> Void) {
        if let index = nodes.firstIndex(where: { $0.id == id }) { body(&nodes[index]) }
    }

    /// Removes the node `id` and its descendants; returns the removed ids (the node first).
    @discardableResult
    mutating func remove(_ id: String) -> [String] {
        guard let node = self[id] else { return [] }
        var removed = [id]
        for child in node.children { removed += remove(child) }
        nodes.removeAll { $0.id == id }
        if let parent = node.parent, let index = nodes.firstIndex(where: { $0.id == parent }) {
            nodes[index].children.removeAll { $0 == id }
        }
        return removed
    }
}
