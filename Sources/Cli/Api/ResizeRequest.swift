/// The body of vm.resize (Cloud Hypervisor's `VmResize`): `desired_vcpus`, `desired_ram` (bytes) and
/// `desired_balloon` (refused: ActorVMM has no balloon). At least one must be given.
struct ResizeRequest: Equatable, Sendable {
    var vcpus: Int?
    var ram: UInt64?

    init(vcpus: Int? = nil, ram: UInt64? = nil) {
        self.vcpus = vcpus
        self.ram = ram
    }

    init(body: [UInt8]) throws(ApiError) {
        let failure = VmAction.resize.failure
        guard !body.isEmpty else { throw ApiError(.badRequest, failure, "vm.resize needs a JSON body, e.g. {\"desired_vcpus\": 2}") }
        do {
            var reader = try ObjectReader(try JsonParser.parse(body), at: "")
            vcpus = try reader.integer("desired_vcpus", in: 1...Int(UInt8.max))
            ram = try reader.integer("desired_ram", in: UInt64(1)...UInt64(Int64.max))
            try reader.unsupported("desired_balloon", "ActorVMM has no balloon device")
            try reader.finish()
        } catch let error as ConfigError {
            throw ApiError(.badRequest, failure, error.description)
        } catch {
            throw ApiError(.badRequest, failure, "\(error)")
        }
        guard vcpus != nil || ram != nil else {
            throw ApiError(.badRequest, failure, "give desired_vcpus or desired_ram")
        }
    }
}
