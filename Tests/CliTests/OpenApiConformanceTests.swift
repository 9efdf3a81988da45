@testable import Cli
import Foundation
import Testing

/// The subset of Cloud Hypervisor's OpenAPI file (Tests/Fixtures/cloud-hypervisor-openapi.yaml, version 54)
/// these tests need, read line by line: paths with their methods and response codes, and schemas with their
/// properties, required properties and enum values. The file's layout is regular (two-space indents).
struct OpenApiDocument {
    struct Schema {
        var properties: [String] = []
        var required: [String] = []
        var enumValues: [String] = []
    }

    var paths: [String: (method: String, codes: Set<Int>)] = [:]
    var schemas: [String: Schema] = [:]

    static let shared: OpenApiDocument = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/cloud-hypervisor-openapi.yaml")
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return OpenApiDocument(text)
    }()

    init(_ text: String) {
        var section = "", path = "", schema = "", block = ""
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = String(rawLine)
            let indent = line.prefix(while: { $0 == " " }).count
            let content = line.trimmingCharacters(in: .whitespaces)
            if indent == 0 { section = content; continue }
            if section == "paths:" {
                if indent == 2 { path = String(content.dropLast()); continue }
                if indent == 4, content == "get:" || content == "put:" {
                    paths[path] = (String(content.dropLast()).uppercased(), [])
                } else if indent == 8, content.hasSuffix(":"), let code = Int(content.dropLast()) {
                    paths[path]?.codes.insert(code)
                }
            } else if section == "components:" {
                if indent == 4 { schema = String(content.dropLast()); schemas[schema] = Schema(); block = ""; continue }
                if indent == 6 {
                    block = content
                    if content.hasPrefix("enum: [") {
                        schemas[schema]?.enumValues = content.dropFirst(7).dropLast().split(separator: ",")
                            .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " \"")) }
                    }
                } else if indent == 8 && block == "properties:" && content.hasSuffix(":") {
                    schemas[schema]?.properties.append(String(content.dropLast()))
                } else if indent == 8 && block == "required:" && content.hasPrefix("- ") {
                    schemas[schema]?.required.append(String(content.dropFirst(2)))
                }
            }
        }
    }
}

@Suite struct OpenApiConformanceTests {
    let doc = OpenApiDocument.shared

    @Test func theFixtureWasRead() {
        #expect(doc.paths.count == 31 && doc.schemas["VmConfig"]?.properties.count == 28, "\(doc.paths.count) paths")
    }

    /// Every endpoint of the OpenAPI file is known, with its method; nothing else is.
    @Test func endpointsAndMethods() {
        #expect(Set(doc.paths.keys) == Set(ApiEndpoint.allCases.map { "/" + $0.rawValue }))
        for endpoint in ApiEndpoint.allCases {
            #expect(doc.paths["/" + endpoint.rawValue]?.method == endpoint.method, "\(endpoint.rawValue)")
        }
    }

    @Test func successStatuses() {
        for endpoint in ApiEndpoint.allCases where endpoint.isImplemented {
            let documented = Set(doc.paths["/" + endpoint.rawValue]?.codes.filter { (200..<300).contains($0) } ?? [])
            // vm.add-disk/add-net: 200 when hot-plugged, 204 when only the config changed (a "cold add").
            let cold: Set<Int> = [.vmAddDisk, .vmAddNet].contains(endpoint) ? [204] : []
            #expect(documented == Set([endpoint.successStatus.code]).union(cold), "\(endpoint.rawValue)")
        }
    }

    /// The 4xx/5xx codes the lifecycle answers with, per endpoint, against the ones the file documents.
    /// Every difference is listed here and in docs/api.md ("Differences from Cloud Hypervisor").
    @Test func lifecycleErrorStatusesDifferOnlyAsDocumented() {
        let actions: [ApiEndpoint: VmAction] = [
            .vmCreate: .create, .vmBoot: .boot, .vmPause: .pause, .vmResume: .resume, .vmShutdown: .shutdown,
            .vmReboot: .reboot, .vmPowerButton: .powerButton, .vmResize: .resize, .vmDelete: .delete,
            .vmAddDisk: .addDevice, .vmAddNet: .addDevice, .vmRemoveDevice: .removeDevice,
        ]
        let undocumented: [ApiEndpoint: Set<Int>] = [
            .vmCreate: [409],  // a VM already exists
            .vmBoot: [405],  // already booted
            .vmResize: [405],  // not running
            .vmAddDisk: [405], .vmAddNet: [405], .vmRemoveDevice: [405],  // paused
        ]
        for (endpoint, action) in actions {
            var codes = Set<Int>()
            for state in [nil] + VmState.allCases.map({ Optional($0) }) {
                if case .failure(let error) = VmLifecycle.next(action, from: state) { codes.insert(ApiError(error).status.code) }
            }
            if action == .resize { codes.insert(429) }  // a vCPU removal is still pending (VcpuHotplug)
            if action == .addDevice { codes.formUnion([400, 409, 500]) }  // bad config, id in use, host failure
            let documented = Set(doc.paths["/" + endpoint.rawValue]?.codes.filter { $0 >= 400 } ?? [])
            #expect(codes.subtracting(documented) == undocumented[endpoint] ?? [], "\(endpoint.rawValue): \(codes.sorted())")
            #expect(documented.subtracting(codes).isEmpty, "\(endpoint.rawValue) documents a code we never send")
        }
    }

    /// Every field of the schema is known to the decoder: null is accepted for each (as absent), so no
    /// Cloud Hypervisor field is ever an "unknown field".
    @Test(arguments: ["VmConfig", "PayloadConfig", "CpusConfig", "MemoryConfig", "SerialConfig", "ConsoleConfig",
                      "DiskConfig", "NetConfig", "RngConfig"])
    func everySchemaFieldIsKnown(schema: String) throws {
        let properties = try #require(doc.schemas[schema]?.properties)
        #expect(!properties.isEmpty)
        let inEveryProbe: Set<String> = ["payload", "kernel", "boot_vcpus", "max_vcpus", "size", "mode", "path", "src"]
        for property in properties where !inEveryProbe.contains(property) {
            let (object, prefix): (String, String) = switch schema {
            case "VmConfig": (#"{"payload": {"kernel": "/k"}, "\#(property)": null}"#, "")
            case "PayloadConfig": (#"{"payload": {"kernel": "/k", "\#(property)": null}}"#, "payload.")
            case "CpusConfig": (#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 1, "max_vcpus": 1, "\#(property)": null}}"#, "cpus.")
            case "MemoryConfig": (#"{"payload": {"kernel": "/k"}, "memory": {"size": 67108864, "\#(property)": null}}"#, "memory.")
            case "SerialConfig": (#"{"payload": {"kernel": "/k"}, "serial": {"mode": "Null", "\#(property)": null}}"#, "serial.")
            case "ConsoleConfig": (#"{"payload": {"kernel": "/k"}, "console": {"mode": "Off", "\#(property)": null}}"#, "console.")
            case "DiskConfig": (#"{"payload": {"kernel": "/k"}, "disks": [{"path": "/d", "\#(property)": null}]}"#, "disks[0].")
            case "NetConfig": (#"{"payload": {"kernel": "/k"}, "net": [{"\#(property)": null}]}"#, "net[0].")
            default: (#"{"payload": {"kernel": "/k"}, "rng": {"src": "/dev/urandom", "\#(property)": null}}"#, "rng.")
            }
            do {
                _ = try VmConfig(json: try JsonParser.parse(Array(object.utf8)))
            } catch let error as ConfigError {
                #expect(error.field != prefix + property || error.message != "unknown field", "\(schema).\(property): \(error)")
                let required = doc.schemas[schema]?.required.contains(property) ?? false
                #expect(required, "only a required field may refuse null: \(schema).\(property): \(error)")
            }
        }
    }

    /// What ActorVMM sends uses the schema's field names, includes its required fields, and its enums' values.
    @Test func responsesUseTheSchemas() throws {
        var config = VmConfig(payload: .init(kernel: "/k", cmdline: "c", initramfs: "/i"))
        config.serial = .file("/s")
        config.disks = [.init(path: "/d")]
        config.net = [.init(tap: "t", mac: "12:34:56:78:9a:bc", ip: "10.0.0.1", mask: "255.0.0.0")]
        config.rng = .init(source: "/dev/urandom")
        let json = config.json
        try check(json, "VmConfig", extra: ["actor_vmm"])
        for (key, schema) in [("cpus", "CpusConfig"), ("memory", "MemoryConfig"), ("payload", "PayloadConfig"),
                              ("serial", "SerialConfig"), ("console", "ConsoleConfig"), ("rng", "RngConfig")] {
            try check(try #require(json[key]), schema)
        }
        if case .array(let disks)? = json["disks"] { for disk in disks { try check(disk, "DiskConfig") } }
        if case .array(let nets)? = json["net"] { for net in nets { try check(net, "NetConfig") } }
        let modes = try #require(doc.schemas["ConsoleMode"]?.enumValues)
        for mode in [ConsoleMode.off, .null, .tty, .file("/f")] {
            var c = config
            c.serial = mode
            guard case .string(let name)? = c.json["serial"]?["mode"] else { Issue.record("no mode"); continue }
            #expect(modes.contains(name))
        }
        #expect(Set(VmState.allCases.map(\.rawValue)).isSubset(of: try #require(doc.schemas["VmState"]?.enumValues)))
    }

    @Test func infoAndPingUseTheSchemas() async throws {
        let api = try await ApiFixture.start()
        defer { Task { await api.stop() } }
        try check(try #require(try api.request("GET", "vmm.ping").json), "VmmPingResponse")
        _ = try api.request("PUT", "vm.create", body: #"{"payload": {"kernel": "/k"}}"#)
        _ = try api.request("PUT", "vm.boot")
        try check(try #require(try api.request("GET", "vm.info").json), "VmInfo")
    }

    func check(_ value: JsonValue, _ schemaName: String, extra: Set<String> = []) throws {
        let schema = try #require(doc.schemas[schemaName], "\(schemaName)")
        guard case .object(let members) = value else { Issue.record("\(schemaName): not an object"); return }
        let keys = Set(members.map(\.key))
        #expect(keys.subtracting(schema.properties).subtracting(extra).isEmpty, "\(schemaName): \(keys.subtracting(schema.properties))")
        #expect(Set(schema.required).isSubset(of: keys), "\(schemaName) requires \(schema.required)")
    }
}
