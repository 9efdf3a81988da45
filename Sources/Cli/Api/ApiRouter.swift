import ActorVmm
import Glibc

/// The endpoints of Cloud Hypervisor's API (OpenAPI file, version 54), under `/api/v1/`. ActorVMM implements
/// the lifecycle and inspection ones; the rest are known, so that they answer 501 rather than 404.
enum ApiEndpoint: String, CaseIterable, Sendable {
    case vmmPing = "vmm.ping", vmmShutdown = "vmm.shutdown"
    case vmCreate = "vm.create", vmBoot = "vm.boot", vmShutdown = "vm.shutdown", vmReboot = "vm.reboot"
    case vmPowerButton = "vm.power-button", vmPause = "vm.pause", vmResume = "vm.resume", vmDelete = "vm.delete"
    case vmInfo = "vm.info", vmCounters = "vm.counters"
    // Not implemented by ActorVMM.
    case vmResize = "vm.resize", vmResizeDisk = "vm.resize-disk", vmResizeZone = "vm.resize-zone"
    case vmAddDevice = "vm.add-device", vmRemoveDevice = "vm.remove-device", vmAddDisk = "vm.add-disk"
    case vmAddFs = "vm.add-fs", vmAddGenericVhostUser = "vm.add-generic-vhost-user", vmAddPmem = "vm.add-pmem"
    case vmAddNet = "vm.add-net", vmAddVsock = "vm.add-vsock", vmAddVdpa = "vm.add-vdpa"
    case vmAddUserDevice = "vm.add-user-device", vmSnapshot = "vm.snapshot", vmCoredump = "vm.coredump"
    case vmNmi = "vm.nmi", vmRestore = "vm.restore", vmReceiveMigration = "vm.receive-migration"
    case vmSendMigration = "vm.send-migration"

    static let prefix = "/api/v1/"

    /// The one method the endpoint accepts.
    var method: String {
        switch self {
        case .vmmPing, .vmInfo, .vmCounters: "GET"
        default: "PUT"
        }
    }

    var isImplemented: Bool {
        switch self {
        case .vmmPing, .vmmShutdown, .vmCreate, .vmBoot, .vmShutdown, .vmReboot, .vmPowerButton, .vmPause, .vmResume,
             .vmResize, .vmDelete, .vmInfo, .vmCounters, .vmSnapshot, .vmRestore, .vmSendMigration, .vmReceiveMigration,
             .vmAddDisk, .vmAddNet, .vmRemoveDevice: true
        default: false
        }
    }

    /// Whether the request carries a JSON body (a VmConfig, or a resize/snapshot/restore/migration request).
    var takesBody: Bool {
        switch self {
        case .vmCreate, .vmResize, .vmSnapshot, .vmRestore, .vmSendMigration, .vmReceiveMigration, .vmAddDisk, .vmAddNet,
             .vmRemoveDevice: true
        default: false
        }
    }

    /// The status of a successful call: 200 with a JSON body, or 204. (vm.add-disk and vm.add-net answer
    /// 200 with the device's PCI address when hot-plugged, 204 when only the config changed.)
    var successStatus: HttpStatus {
        switch self {
        case .vmmPing, .vmInfo, .vmCounters, .vmAddDisk, .vmAddNet: .ok
        default: .noContent
        }
    }
}

/// Maps requests to the ``VmmController``: method and path checks, bodies, status codes and JSON shapes as
/// in Cloud Hypervisor. Errors come back as Cloud Hypervisor's error body, a JSON array of messages.
struct ApiRouter: Sendable {
    let controller: VmmController
    /// Released after vmm.shutdown has been answered; the main thread then exits the process.
    let exitLatch: StopLatch

    func handle(_ request: HttpRequest) async -> HttpResponse {
        let path = request.path
        guard path.hasPrefix(ApiEndpoint.prefix), let endpoint = ApiEndpoint(rawValue: String(path.dropFirst(ApiEndpoint.prefix.count))) else {
            return ApiError(.notFound, "unknown endpoint \(path) (endpoints are /api/v1/vmm.ping, /api/v1/vm.info, …)").response
        }
        // HEAD is GET without the body (the server leaves it out), as RFC 9110 asks of every GET resource.
        let readsOnly = endpoint.method == "GET"
        guard request.method == endpoint.method || (readsOnly && request.method == "HEAD") else {
            var response = ApiError(.methodNotAllowed, "\(endpoint.rawValue) takes \(endpoint.method), not \(request.method)").response
            response.headers.append(HttpHeader(name: "Allow", value: readsOnly ? "GET, HEAD" : endpoint.method))
            return response
        }
        guard endpoint.isImplemented else {
            return ApiError(.notImplemented, "\(endpoint.rawValue) is not implemented by actor-vmm").response
        }
        if !endpoint.takesBody && !request.body.isEmpty {
            return ApiError(.badRequest, "\(endpoint.rawValue) takes no request body").response
        }
        do {
            return try await dispatch(endpoint, request)
        } catch {
            return error.response
        }
    }

    private func dispatch(_ endpoint: ApiEndpoint, _ request: HttpRequest) async throws(ApiError) -> HttpResponse {
        do throws(VmmError) {
            return try await call(endpoint, request)
        } catch {
            throw ApiError(error)
        }
    }

    /// Runs `endpoint` on the controller; its results become JSON here.
    private func call(_ endpoint: ApiEndpoint, _ request: HttpRequest) async throws(VmmError) -> HttpResponse {
        switch endpoint {
        case .vmmPing:
            return .json(.ok, .object([
                "build_version": .string(versionNumber), "version": .string(versionNumber),
                "pid": .int(getpid()), "features": .array([]),
            ]))
        case .vmmShutdown:
            try await controller.shutdownVmm()
            var response = HttpResponse(status: .noContent, closeConnection: true)
            let exitLatch = self.exitLatch
            response.afterSend = { exitLatch.requestStop(.stopRequested("vmm.shutdown request")) }
            return response
        case .vmCreate:
            let config: VmConfig
            do throws(ApiError) {
                config = try Self.decodeConfig(request.body)
            } catch {
                return error.response
            }
            try await controller.create(config)
        case .vmBoot: try await controller.boot()
        case .vmShutdown: try await controller.shutdown()
        case .vmReboot: try await controller.reboot()
        case .vmPowerButton: try await controller.powerButton()
        case .vmResize:
            let resize: ResizeRequest
            do throws(ApiError) {
                resize = try ResizeRequest(body: request.body)
            } catch {
                return error.response
            }
            try await controller.resize(resize)
        case .vmAddDisk, .vmAddNet:
            let device: HotplugDevice
            do throws(ApiError) {
                device = try HotplugDevice(endpoint, body: request.body)
            } catch {
                return error.response
            }
            guard let info = try await controller.addDevice(device) else { return HttpResponse(status: .noContent) }
            return .json(.ok, info.json)
        case .vmRemoveDevice:
            let remove: RemoveDeviceRequest
            do throws(ApiError) {
                remove = try RemoveDeviceRequest(body: request.body)
            } catch {
                return error.response
            }
            try await controller.removeDevice(id: remove.id)
        case .vmPause: try await controller.pause()
        case .vmResume: try await controller.resume()
        case .vmDelete: try await controller.delete()
        case .vmInfo: return .json(.ok, try await controller.info().json)
        case .vmCounters: return .json(.ok, .object(try await controller.counters().map(\.json)))
        case .vmSnapshot:
            let target = try Self.snapshotRequest(request.body, urlField: "destination_url")
            try await controller.snapshot(destinationURL: target.url)
        case .vmRestore:
            let source = try Self.snapshotRequest(request.body, urlField: "source_url")
            try await controller.restore(sourceURL: source.url, resume: source.resume)
        case .vmSendMigration:
            let target = try Self.snapshotRequest(request.body, urlField: "destination_url")
            try await controller.sendMigration(destinationURL: target.url)
        case .vmReceiveMigration:
            let source = try Self.snapshotRequest(request.body, urlField: "receiver_url")
            try await controller.receiveMigration(receiverURL: source.url)
        default: throw VmmError(.notSupported, "\(endpoint.rawValue) is not implemented by actor-vmm")
        }
        return HttpResponse(status: endpoint.successStatus)
    }

    /// A snapshot, restore or migration body; errors name the field.
    static func snapshotRequest(_ body: [UInt8], urlField: String) throws(VmmError) -> SnapshotRequest {
        do throws(ConfigError) {
            return try SnapshotRequest.parse(body, urlField: urlField)
        } catch {
            throw VmmError.invalidConfig(error, "invalid request")
        }
    }

    /// The vm.create body: JSON, then a VmConfig; errors name the byte or the field.
    static func decodeConfig(_ body: [UInt8]) throws(ApiError) -> VmConfig {
        guard !body.isEmpty else { throw ApiError(.badRequest, "invalid VM configuration", "vm.create needs a VmConfig JSON body") }
        let json: JsonValue
        do {
            json = try JsonParser.parse(body)
        } catch {
            throw ApiError(.badRequest, "invalid VM configuration", error.description)
        }
        do {
            return try VmConfig(json: json)
        } catch {
            throw ApiError.invalidConfig(error)
        }
    }
}

/// "0.1.0": the version without the program name.
let versionNumber = String(version.split(separator: " ").last ?? "0")
