/// What `vm.info` reports: the config, the state, and (when booted) the device tree.
struct VmInfo: Sendable {
    let config: VmConfig
    let state: VmState
    let memoryActualSize: UInt64
    let deviceTree: DeviceTree?
}

/// One device's counters (`vm.counters`), by name in report order.
struct DeviceCounterSet: Equatable, Sendable {
    let id: String
    var counters: [(name: String, value: UInt64)]

    static func == (a: Self, b: Self) -> Bool {
        a.id == b.id && a.counters.map(\.name) == b.counters.map(\.name) && a.counters.map(\.value) == b.counters.map(\.value)
    }
}
