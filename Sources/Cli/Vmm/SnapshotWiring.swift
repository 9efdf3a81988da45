import ActorVmm
import Devices
import EpollLoop

/// Snapshot, restore and migration as the lifecycle sees them (docs/snapshot.md). The machinery is in
/// ActorVmm (`VmSnapshotter`, `MigrationSender`/`Receiver`) and in each device actor; here it is wired to the
/// ``Machine`` (through the device manager's walk), the ``VmmController`` and the errors users see.
extension Machine {
    /// The VM's snapshotter: the UART, then every virtio device in the device manager's walk order.
    var snapshotter: VmSnapshotter {
        var walked: [any Snapshottable] = []
        if let serial { walked.append(serial) }
        walked += devices.virtioDevices.map(\.device)
        return VmSnapshotter(vm: vm, manager: manager, devices: walked)
    }
}

/// What a snapshot or restore request names, parsed from its JSON body.
struct SnapshotRequest: Sendable, Equatable {
    var url: String
    var resume = false

    /// `{"destination_url": …}` (vm.snapshot, vm.send-migration) or `{"source_url": …, "resume": bool,
    /// "prepare": bool}` (vm.restore), `{"receiver_url": …}` (vm.receive-migration).
    static func parse(_ body: [UInt8], urlField: String) throws(ConfigError) -> SnapshotRequest {
        let json: JsonValue
        do {
            json = try JsonParser.parse(body)
        } catch {
            throw ConfigError(field: urlField, "the body is not JSON: \(error)")
        }
        guard case .object(let members) = json else { throw ConfigError(field: urlField, "the body must be a JSON object") }
        var request = SnapshotRequest(url: "")
        for member in members {
            switch (member.key, member.value) {
            case (urlField, .string(let url)): request.url = url
            case ("resume", .bool(let on)) where urlField == "source_url": request.resume = on
            case ("prepare", .bool), ("local", .bool): break  // accepted; ActorVMM prepares and copies the same way
            case ("net_fds", .null), ("memory_restore_mode", .string("Copy")): break
            default: throw ConfigError(field: member.key, "not a field of this request (or not \(member.value.typeName) here)")
            }
        }
        guard !request.url.isEmpty else { throw ConfigError(field: urlField, "missing") }
        return request
    }
}

extension SnapshotError {
    /// A bad snapshot or URL is the user's fault (400, exit code 2); a failing host is not (500, exit code 1).
    func vmmError(_ summary: String, field: String) -> VmmError {
        switch self {
        case .io: VmmError(.hostFault, summary, description)
        default: VmmError.invalidConfig(ConfigError(field: field, description), summary)
        }
    }
}

extension KvmBackend {
    /// Builds the VM of `config` and loads `snapshot` into it (memory from `directory`), the vCPUs started
    /// parked; resumed at once if `resume`. On failure nothing is left behind.
    nonisolated(nonsending) func restore(_ config: VmConfig, _ prepared: any PreparedVm, snapshot: VmSnapshot,
                                         directory: String?, resume: Bool,
                                         onStop: @escaping @Sendable (VmStopReason) -> Void) async throws(VmmError) -> any VmInstance {
        guard let payload = prepared as? PreparedPayload else { throw VmmError(.hostFault, "cannot restore the VM", "internal error: not a prepared payload") }
        let machine: Machine
        do {
            machine = try await Machine.build(config: config, prepared: payload, stopLatch: StopLatch(onStop: onStop))
        } catch {
            throw VmmError(.hostFault, "cannot restore the VM", "cannot create the VM: \(error)")
        }
        do throws(SnapshotError) {
            try await machine.snapshotter.restore(snapshot, memoryFrom: directory)
        } catch {
            await machine.teardown(stdin: nil)
            throw error.vmmError("cannot restore the VM", field: "source_url")
        }
        do {
            let stdin = try await machine.start(serialInput: config.serial == .tty, parked: true)
            if resume { await machine.snapshotter.resume() }
            return MachineInstance(machine: machine, stdin: stdin)
        } catch {
            await machine.teardown(stdin: nil)
            throw VmmError(.hostFault, "cannot restore the VM", "cannot start the VM: \(error)")
        }
    }
}

extension MachineInstance {
    /// Writes a snapshot of the paused VM into `directory`.
    nonisolated(nonsending) func snapshot(to directory: String, config: [UInt8]) async throws(VmmError) {
        do throws(SnapshotError) {
            try await machine.snapshotter.snapshot(to: directory, config: config)
        } catch {
            throw error.vmmError("cannot snapshot the VM", field: "destination_url")
        }
    }
}
