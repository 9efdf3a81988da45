extension DeviceTree {
    /// Cloud Hypervisor's `device_tree` in `vm.info`: an object of `DeviceNode`s by id, each
    /// `{"id", "resources": [{"PioAddressRange": {"base", "size"}}, …], "parent", "children", "pci_bdf"}`.
    var json: JsonValue {
        .object(nodes.map { node in
            JsonMember(key: node.id, value: .object([
                JsonMember(key: "id", value: .string(node.id)),
                JsonMember(key: "resources", value: .array(node.resources.map(\.json))),
                JsonMember(key: "parent", value: node.parent.map { .string($0) } ?? .null),
                JsonMember(key: "children", value: .array(node.children.map { .string($0) })),
                JsonMember(key: "pci_bdf", value: node.pciBdf.map { .string($0.description) } ?? .null),
            ]))
        })
    }
}

extension DeviceResource {
    /// Cloud Hypervisor's serialisation of its `Resource` enum: `{"<Variant>": {fields}}`.
    var json: JsonValue {
        switch self {
        case .pioRange(let base, let size): .object(["PioAddressRange": .object(["base": .int(base), "size": .int(size)])])
        case .mmioRange(let base, let size): .object(["MmioAddressRange": .object(["base": .int(base), "size": .int(size)])])
        case .pciBar(let index, let base, let size):
            .object(["PciBar": .object([JsonMember(key: "index", value: .int(index)), JsonMember(key: "base", value: .int(base)),
                                        JsonMember(key: "size", value: .int(size)), JsonMember(key: "type", value: .string("Mmio64")),
                                        JsonMember(key: "prefetchable", value: .bool(false))])])
        case .msiVector(let gsi): .object(["MsiIrq": .object(["gsi": .int(gsi)])])
        }
    }
}

extension VmInfo {
    /// Cloud Hypervisor's `VmInfo`: `config`, `state`, `memory_actual_size`, and `device_tree` once booted.
    var json: JsonValue {
        var members = [JsonMember(key: "config", value: config.json), JsonMember(key: "state", value: .string(state.rawValue)),
                       JsonMember(key: "memory_actual_size", value: .int(memoryActualSize))]
        if let deviceTree { members.append(JsonMember(key: "device_tree", value: deviceTree.json)) }
        return .object(members)
    }
}

extension DeviceCounterSet {
    /// `"<id>": {"requests": n, "bytes": n, …}` of `vm.counters`.
    var json: JsonMember {
        JsonMember(key: id, value: .object(counters.map { JsonMember(key: $0.name, value: .int($0.value)) }))
    }
}
