import ActorVmm
@testable import Cli
import Testing

/// vm.resize through the controller (fake backend) and `actor-vmm-remote resize`'s body.
extension ControllerTests {
    @Test func resizeIsCheckedBeforeTheMachineSeesIt() async throws {
        let f = try Fixture()
        defer { f.loop.shutdown() }
        let c = f.controller
        var config = config()
        config.maxVcpus = 4
        #expect(await status { try await c.resize(ResizeRequest(vcpus: 2)) } == 404)  // no VM
        try await c.create(config)
        #expect(await status { try await c.resize(ResizeRequest(vcpus: 2)) } == 405, "not booted")
        try await c.boot()
        #expect(await status { try await c.resize(ResizeRequest(vcpus: 5)) } == 400, "more than max")
        try await c.pause()
        #expect(await status { try await c.resize(ResizeRequest(vcpus: 2)) } == 405, "paused")
        try await c.resume()
        try await c.resize(ResizeRequest(vcpus: 3))
        #expect(await c.config?.bootVcpus == 3, "vm.info reports the new count")
        #expect(try await c.info().config.bootVcpus == 3)
        #expect(f.backend.events.filter { $0.hasPrefix("resize") } == ["resize 3 -"], "only the valid request reached the VM")
    }

    @Test func remoteResizeBuildsCloudHypervisorsBody() {
        func body(_ arguments: [String]) -> String? {
            try? RemoteCommand.resizeBody(arguments).map { String(decoding: $0, as: UTF8.self) }.get()
        }
        #expect(body(["--cpus", "4"]) == "{\"desired_vcpus\":4}")
        #expect(body(["--cpus", "2", "--memory", "1G"]) == "{\"desired_vcpus\":2,\"desired_ram\":1073741824}")
        #expect(body([]) == nil && body(["--cpus"]) == nil && body(["--cpus", "0"]) == nil)
        #expect(body(["--memory", "lots"]) == nil && body(["--disks", "2"]) == nil)
    }

    @Test func resizeBodies() throws {
        #expect(try ResizeRequest(body: Array("{\"desired_vcpus\": 2, \"desired_ram\": null}".utf8)) == ResizeRequest(vcpus: 2))
        #expect(try ResizeRequest(body: Array("{\"desired_ram\": 1073741824}".utf8)) == ResizeRequest(ram: 1 << 30))
        for bad in ["", "[]", "{}", "{\"desired_vcpus\": 0}", "{\"desired_vcpus\": \"2\"}", "{\"cpus\": 2}", "{\"desired_balloon\": 5}"] {
            #expect(throws: ApiError.self, "\(bad)") { try ResizeRequest(body: Array(bad.utf8)) }
        }
    }
}
