import Devices

extension VmConfig {
    /// The one check of a whole config, whichever reader filled it: what the readers cannot see one value at
    /// a time (ids unique, the terminal claimed once, the PCI bus not overfull) and what the devices cannot
    /// do (a TAP name the kernel cannot take, addresses the TAP setup cannot use, a disk serial too long).
    /// Never pretend: such a VM is not created at all. Each error names the JSON field and, for the command
    /// line, the option (``ConfigError/cliMessage``).
    func validate() throws(ConfigError) {
        var ids: Set<String> = []
        func checkID(_ id: String?, field: String, option: String) throws(ConfigError) {
            guard let id else { return }
            if id.hasPrefix("__") || DeviceManager.platformIDs.contains(id) {
                let why = id.hasPrefix("__") ? "ids starting with __ are reserved for the VMM's own devices"
                    : "\(id) is the id of one of the VMM's own devices"
                throw ConfigError(field: field, why, cli: "\(option) id=\(id): \(why)")
            }
            guard ids.insert(id).inserted else {
                throw ConfigError(field: field, "\(id) is already the id of another device", cli: "\(option) id=\(id): already the id of another device")
            }
        }
        for (index, disk) in disks.enumerated() {
            if let id = disk.id, id.utf8.count > Self.maxDiskIDLength {
                let why = "at most \(Self.maxDiskIDLength) bytes (it is the virtio-blk serial)"
                throw ConfigError(field: "disks[\(index)].id", why, cli: "--disk id=\(id): \(why)")
            }
            try checkID(disk.id, field: "disks[\(index)].id", option: "--disk")
        }
        for (index, net) in net.enumerated() {
            let field = "net[\(index)]"
            if let tap = net.tap, let problem = tapNameProblem(tap) {
                throw ConfigError(field: "\(field).tap", problem, cli: "--net tap=\(tap): \(problem)")
            }
            if let mac = net.mac, let bytes = parseMac(mac), bytes[0] & 1 != 0 {
                let why = "a multicast address cannot be a NIC's address"
                throw ConfigError(field: "\(field).mac", why, cli: "--net mac=\(mac): \(why)")
            }
            for (key, value) in [("ip", net.ip), ("mask", net.mask)] {
                if let value, let problem = ipv4Problem(value, isMask: key == "mask") {
                    throw ConfigError(field: "\(field).\(key)", problem, cli: "--net \(key)=\(value): \(problem)")
                }
            }
            try checkID(net.id, field: "\(field).id", option: "--net")
            try checkQueues(net, field: field)
        }
        try validateMemoryHotplug()
        let pciDevices = disks.count + net.count + (rng == nil ? 0 : 1) + (console == .off ? 0 : 1) + (virtioMemSize == nil ? 0 : 1)
        if pciDevices > Self.maxPciDevices {
            throw ConfigError(field: disks.isEmpty ? "net" : "disks", "too many PCI devices (\(pciDevices)); bus 0 holds at most \(Self.maxPciDevices)",
                              cli: "too many PCI devices (\(pciDevices)); bus 0 holds at most \(Self.maxPciDevices)")
        }
        if serial == .tty && console == .tty {
            throw ConfigError(field: "console.mode", "serial and console cannot both use the terminal (Tty)",
                              cli: "--serial tty: the console already uses the terminal (its default is tty); add --console off or choose another")
        }
    }

    /// A net device's `num_queues` (pairs of queues, at most one pair per vCPU as in Cloud Hypervisor) and
    /// `queue_size` (a power of 2 the transport can offer).
    private func checkQueues(_ net: Net, field: String) throws(ConfigError) {
        let maxQueues = 2 * VirtioNet.maxQueuePairs
        if net.numQueues < 2 || net.numQueues % 2 != 0 || net.numQueues > maxQueues {
            let why = "expected an even number of queues from 2 to \(maxQueues) (a receive and a transmit queue per pair)"
            throw ConfigError(field: "\(field).num_queues", why, cli: "--net num_queues=\(net.numQueues): \(why)")
        }
        if net.numQueues / 2 > bootVcpus {
            let why = "\(net.numQueues / 2) queue pairs for \(bootVcpus) vCPU(s): at most one pair per vCPU"
            throw ConfigError(field: "\(field).num_queues", why, cli: "--net num_queues=\(net.numQueues): \(why)")
        }
        let size = net.queueSize
        if size < 2 || size > Int(SplitQueue.maxSize) || size & (size - 1) != 0 {
            let why = "expected a power of 2 from 2 to \(SplitQueue.maxSize) (the largest queue ActorVMM offers)"
            throw ConfigError(field: "\(field).queue_size", why, cli: "--net queue_size=\(size): \(why)")
        }
    }

    /// Virtio-blk's serial (GET_ID) has 20 bytes.
    static let maxDiskIDLength = 20
    /// PCI bus 0 has 32 slots; the host bridge takes one.
    static let maxPciDevices = 31

}
