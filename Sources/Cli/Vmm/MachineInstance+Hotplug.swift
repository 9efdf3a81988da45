import ActorVmm
import Devices

extension MachineInstance {
    var virtioDeviceIDs: [String] { machine.devices.virtioDevices.map(\.id) }

    /// Opens `device`'s host side (as at boot: a file or TAP that cannot open is the user's error, and
    /// nothing changes), then attaches and announces it (``PciHotplug``).
    nonisolated(nonsending) func addDevice(_ device: HotplugDevice) async throws(VmmError) -> PciDeviceInfo {
        guard !isDown else { throw VmmError(.invalidTransition, device.failure, "the VM is stopping") }
        let opened: PreparedDevices.Virtio.Opened
        do throws(VirtioError) {
            switch device {
            case .disk(let disk): opened = .block(try VirtioBlock.open(disk.backendOptions))
            case .net(let net): opened = .net(try VirtioNet.open(net.backendOptions))
            }
        } catch {
            let field: String, value: String
            switch device {
            case .disk(let disk): (field, value) = ("path", disk.path)
            case .net(let net): (field, value) = ("tap", net.tap ?? TapDevice.nameTemplate)
            }
            throw VmmError.invalidConfig(ConfigError(field: field, "\(value): \(error.message)"), device.failure)
        }
        do {
            return try await machine.pciHotplug.add(PreparedDevices.Virtio(id: device.id, idPrefix: device.idPrefix, opened: opened))
        } catch {
            throw VmmError(error.vmmKind, device.failure, error.description)
        }
    }

    nonisolated(nonsending) func removeDevice(id: String) async throws(VmmError) {
        guard !isDown else { throw VmmError(.invalidTransition, VmAction.removeDevice.failure, "the VM is stopping") }
        if machine.virtioMem != nil, id == VirtioMemHotplug.id {
            throw VmmError(.badRequest, VmAction.removeDevice.failure, "\(id) is the virtio-mem device, which stays: resize it with vm.resize")
        }
        do {
            try await machine.pciHotplug.requestRemoval(id: id)
        } catch {
            throw VmmError(error.vmmKind, VmAction.removeDevice.failure, error.description)
        }
    }
}

extension DeviceManagerError {
    /// How the API answers it: an id in use 409, an unknown one 404, a full bus 400, the host 500.
    var vmmKind: VmmError.Kind {
        switch self {
        case .idInUse: .conflict
        case .unknownDevice: .notFound
        case .noFreeSlot, .noBarSpace: .badRequest
        case .busesFrozen, .bus, .host: .hostFault
        }
    }
}
