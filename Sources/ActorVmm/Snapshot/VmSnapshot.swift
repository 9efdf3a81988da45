import EpollLoop
import Glibc

/// A whole VM's saved state: what a snapshot directory holds (`state.bin`, `memory.bin`) and what a
/// migration sends after the memory rounds. The device manager fills `devices` by walking its devices;
/// the control plane fills `config`.
public struct VmSnapshot: Sendable, Equatable {
    public static let stateFileName = "state.bin"

    public var config: [UInt8]
    public var vm: VmKernelState
    public var vcpus: [VcpuState]
    /// Per device: its ``Snapshottable/snapshotID`` and state, in the order they were walked.
    public var devices: [(id: String, state: [UInt8])]
    public var memory: MemoryImage?

    public init(config: [UInt8], vm: VmKernelState, vcpus: [VcpuState], devices: [(id: String, state: [UInt8])],
                memory: MemoryImage?) {
        self.config = config; self.vm = vm; self.vcpus = vcpus; self.devices = devices; self.memory = memory
    }

    public static func == (a: VmSnapshot, b: VmSnapshot) -> Bool {
        a.config == b.config && a.vm == b.vm && a.vcpus == b.vcpus && a.memory == b.memory
            && a.devices.map(\.id) == b.devices.map(\.id) && a.devices.map(\.state) == b.devices.map(\.state)
    }

    /// The device state filed under `id`, or an error naming the device.
    public func deviceState(_ id: String) throws(SnapshotError) -> [UInt8] {
        guard let entry = devices.first(where: { $0.id == id }) else { throw .missing("state for device '\(id)'") }
        return entry.state
    }

    /// The container bytes (sections: config, vm, one vcpu each, one device each, memory if any).
    public func encode() -> [UInt8] {
        var sections: [SnapshotContainer.Section] = [.init(.config, config), .init(.vm, vm.encode())]
        sections += vcpus.map { .init(.vcpu, $0.encode()) }
        for device in devices {
            var out = SnapshotEncoder()
            out.string(device.id)
            out.blob(device.state)
            sections.append(.init(.device, out.bytes))
        }
        if let memory { sections.append(.init(.memory, memory.encode())) }
        return SnapshotContainer.encode(sections)
    }

    public static func decode(_ bytes: [UInt8], name: String) throws(SnapshotError) -> VmSnapshot {
        var config: [UInt8]?, vm: VmKernelState?, memory: MemoryImage?
        var vcpus: [VcpuState] = [], devices: [(id: String, state: [UInt8])] = []
        for section in try SnapshotContainer.decode(bytes, name: name) {
            switch section.id {
            case .config:
                guard config == nil else { throw .invalid("\(name): two config sections") }
                config = section.payload
            case .vm:
                guard vm == nil else { throw .invalid("\(name): two vm sections") }
                vm = try VmKernelState.decode(section.payload)
            case .vcpu:
                let vcpu = try VcpuState.decode(section.payload)
                guard vcpu.id == UInt32(vcpus.count) else { throw .invalid("\(name): vcpu\(vcpu.id) where vcpu\(vcpus.count) was expected") }
                vcpus.append(vcpu)
            case .device:
                var input = SnapshotDecoder(section.payload, context: "\(name) device section")
                let id = try input.string(limit: 256)
                let state = try input.blob()
                try input.finish()
                guard !devices.contains(where: { $0.id == id }) else { throw .invalid("\(name): device '\(id)' twice") }
                devices.append((id, state))
            case .memory:
                guard memory == nil else { throw .invalid("\(name): two memory sections") }
                memory = try MemoryImage.decode(section.payload)
            }
        }
        guard let config else { throw .missing("config section in \(name)") }
        guard let vm else { throw .missing("vm section in \(name)") }
        guard !vcpus.isEmpty else { throw .missing("vcpu section in \(name)") }
        return VmSnapshot(config: config, vm: vm, vcpus: vcpus, devices: devices, memory: memory)
    }

    /// Creates `directory` if it does not exist (the snapshot's files go there).
    public static func makeDirectory(_ directory: String) throws(SnapshotError) {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw .io("cannot create \(directory): \(Errno.current)") }
    }

    /// Writes `state.bin` into `directory` atomically (a temporary file renamed into place). Write the
    /// memory file first: a directory with a `state.bin` is complete.
    public func write(to directory: String) throws(SnapshotError) {
        let path = directory + "/" + Self.stateFileName, temporary = path + ".tmp"
        let bytes = encode()
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io("cannot create \(temporary): \(Errno.current)") }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { buffer in
            Result { () throws(SnapshotError) in
                try MemoryImage.writeFully(fd, buffer.baseAddress!, buffer.count, at: 0, path: temporary)
            }
        }
        try written.get()
        guard fsync(fd) == 0, rename(temporary, path) == 0 else { throw .io("cannot write \(path): \(Errno.current)") }
    }

    /// Reads `state.bin` from `directory`.
    public static func read(from directory: String) throws(SnapshotError) -> VmSnapshot {
        let path = directory + "/" + stateFileName
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("cannot open snapshot \(path): \(Errno.current)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .io("cannot read \(path): \(Errno.current)") }
            if n == 0 { break }
            bytes += chunk[0..<n]
            guard bytes.count <= 64 << 20 else { throw .invalid("\(path) is larger than 64 MiB") }
        }
        return try decode(bytes, name: path)
    }

    /// The directory of a `file:///dir` URL (Cloud Hypervisor's `destination_url`/`source_url`), or an
    /// error naming what is wrong.
    public static func directory(fromURL url: String) throws(SnapshotError) -> String {
        let prefix = "file://"
        guard url.hasPrefix(prefix) else { throw .invalid("'\(url)' is not a file:// URL (expected file:///path/to/dir)") }
        let path = String(url.dropFirst(prefix.count))
        guard path.hasPrefix("/") else { throw .invalid("'\(url)' has no absolute path (expected file:///path/to/dir)") }
        return path
    }
}
