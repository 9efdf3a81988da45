import Foundation
import Glibc
import Testing

/// The real `actor-vmm --api-socket` with no payload, driven through its socket and `actor-vmm-remote`:
/// the test guest created, booted, paused and resumed through the API; the lifecycle; the counters.
@Suite(.enabled(if: Harness.kvmAvailable, "needs /dev/kvm (read-write); skipped on this machine"), .serialized)
struct ApiGuestTests {
    /// The test guest through actor-vmm-remote: paused mid-run, resumed, and every check still passes.
    @Test func testGuestBootsPausesAndResumesThroughTheApi() throws {
        let vmm = try VmmProcess()
        let serialLog = "/tmp/actor-vmm-e2e-\(getpid())-serial.log"
        let configFile = "/tmp/actor-vmm-e2e-\(getpid())-config.json"
        unlink(serialLog)
        defer { unlink(serialLog); unlink(configFile) }
        let checks = Array(repeating: "pio,mmio", count: 4).joined(separator: ",")
        try Harness.vmConfig(kernel: Harness.guestPath, cmdline: "tests=\(checks)", serialFile: serialLog)
            .write(toFile: configFile, atomically: true, encoding: .utf8)
        func serial() -> String { (try? String(contentsOfFile: serialLog, encoding: .utf8)) ?? "" }
        func counters() -> [String: [String: Int]] {
            let result = vmm.remote(["counters"])
            return (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: [String: Int]] ?? [:]
        }

        let ping = vmm.remote(["ping"])
        #expect(ping.status == 0 && ping.stdout.contains("\"pid\":\(vmm.pid)"), "\(ping.stdout)\(ping.stderr)")
        let create = vmm.remote(["create", configFile])
        #expect(create.status == 0 && create.stdout.isEmpty, "\(create.stderr)")
        #expect(vmm.remote(["info"]).stdout.contains("\"state\":\"Created\""))
        #expect(vmm.remote(["boot"]).status == 0)
        #expect(Harness.eventually { serial().contains("TEST pio PASS") }, "the guest runs: \(serial())")

        #expect(vmm.remote(["pause"]).status == 0)
        #expect(vmm.remote(["info"]).stdout.contains("\"state\":\"Paused\""))
        let paused = counters(), pausedOutput = serial()
        usleep(300_000)
        #expect(counters() == paused, "nothing moves while paused")
        #expect(serial() == pausedOutput)
        let requests = paused["test-device"]?["requests"] ?? 0
        #expect(requests > 0 && paused["test-device"]?["bytes"] ?? 0 >= requests, "\(paused)")
        #expect(paused["serial"]?["tx_bytes"] ?? 0 > 0, "\(paused)")
        for device in ["serial", "i8042", "acpi-power", "debug-port", "test-device"] {
            let names = Set(paused[device].map { Array($0.keys) } ?? [])
            #expect(names.isSuperset(of: ["requests", "bytes", "errors", "interrupts"]), "\(device)")
        }

        #expect(vmm.remote(["resume"]).status == 0)
        #expect(vmm.waitForExit(timeout: 60) == 0, "the guest finished and powered off: \(vmm.stderr)")
        #expect(serial().contains("TESTGUEST DONE pass=8 fail=0"), "\(serial())")
        #expect(!FileManager.default.fileExists(atPath: vmm.socketPath), "the socket file is removed on exit")
    }

    /// Every lifecycle endpoint on a guest that never stops by itself (it writes to the test device in a loop).
    @Test func lifecycleRebootAndCleanTeardown() throws {
        let kernel = Harness.writeTinyKernel("api-loop", code: [0x66, 0xBA, 0x00, 0x0A, 0xEE, 0xEB, 0xFD])  // mov dx, 0xa00; 1: out dx, al; jmp 1b
        defer { unlink(kernel) }
        let vmm = try VmmProcess()
        let idle = vmm.openDescriptors()
        #expect(vmm.call("PUT", "vm.create", body: Harness.vmConfig(kernel: kernel, memory: 16 << 20)).status == 204)
        #expect(vmm.call("PUT", "vm.boot").status == 204)
        func requests() -> Int { (vmm.call("GET", "vm.counters").object["test-device"] as? [String: Int])?["requests"] ?? -1 }
        #expect(Harness.eventually { requests() > 1000 })

        let info = vmm.call("GET", "vm.info").object
        #expect(info["state"] as? String == "Running")
        let tree = info["device_tree"] as? [String: [String: Any]] ?? [:]
        #expect(Set(tree.keys) == ["serial", "i8042", "debug-port", "acpi-power", "test-device", "pci", "acpi-ged",
                                   "acpi-pci-hotplug", "acpi-cpu-hotplug", "acpi-memory-hotplug"], "\(tree.keys)")
        #expect((tree["test-device"]?["resources"] as? [Any])?.count == 2, "PIO and MMIO ranges")
        let running = vmm.openDescriptors()
        #expect(running.filter { $0.contains("kvm-vm") }.count == 1)

        #expect(vmm.call("PUT", "vm.pause").status == 204)
        let frozen = requests()
        usleep(200_000)
        #expect(requests() == frozen)
        #expect(vmm.call("PUT", "vm.resume").status == 204)
        #expect(Harness.eventually { requests() > frozen + 1000 })

        let before = requests()
        #expect(vmm.call("PUT", "vm.reboot").status == 204)
        #expect(requests() < before, "a reboot is a new machine with new counters")
        #expect(Harness.eventually { requests() > 1000 }, "and it runs")
        // A machine's loops close their descriptors on their own threads as they end: give them a moment.
        #expect(Harness.eventually(5) { vmm.openDescriptors() == running }, "old machine left open: \(vmm.openDescriptors())")
        #expect(vmm.threadNames().filter { $0.hasPrefix("vcpu") } == ["vcpu0"])

        // The test guest does not listen to the power button: the press is answered and the VM runs on.
        let button = vmm.remote(["power-button"])
        #expect(button.status == 0, "\(button.stderr)")
        #expect(vmm.call("GET", "vm.info").object["state"] as? String == "Running")
        #expect(vmm.remote(["shutdown"]).status == 0)
        #expect(vmm.call("GET", "vm.info").object["state"] as? String == "Shutdown")
        #expect(vmm.call("GET", "vm.counters").status == 405)
        #expect(Harness.eventually(5) { vmm.openDescriptors() == idle }, "a shut-down VM holds: \(vmm.openDescriptors())")
        #expect(!vmm.threadNames().contains { $0.hasPrefix("vcpu") || $0 == "vmm-devices" || $0 == "vmm-control" })
        #expect(vmm.remote(["boot"]).status == 0, "a shut-down VM boots again")
        #expect(Harness.eventually { requests() > 100 })
        #expect(vmm.remote(["delete"]).status == 0)
        #expect(vmm.call("GET", "vm.info").status == 404)
        #expect(Harness.eventually(5) { vmm.openDescriptors() == idle }, "a deleted VM holds: \(vmm.openDescriptors())")
        #expect(vmm.remote(["create", "-"], stdin: Harness.vmConfig(kernel: kernel, memory: 16 << 20)).status == 0)
        #expect(vmm.remote(["boot"]).status == 0)
        #expect(vmm.remote(["shutdown-vmm"]).status == 0)
        #expect(vmm.waitForExit() == 0, "\(vmm.stderr)")
        #expect(vmm.stderr.isEmpty, "\(vmm.stderr)")
    }

    /// `net[]` without a `tap` through the API: each device gets a TAP the VMM creates (`vmtapN`), with the
    /// default or the given address, from vm.create on; a shut-down or deleted VM holds none, and a new boot
    /// creates them again.
    @Test func netDevicesWithoutATapThroughTheApi() throws {
        let kernel = Harness.writeTinyKernel("api-net", code: [0x66, 0xBA, 0x00, 0x0A, 0xEE, 0xEB, 0xFD])  // the test-device loop
        defer { unlink(kernel) }
        let vmm = try VmmProcess()
        let config = Harness.vmConfig(kernel: kernel, memory: 16 << 20,
                                      extra: #", "net": [{}, {"tap": "", "ip": "10.201.6.1", "mask": "255.255.255.128"}]"#)
        func taps() -> [String] { TapPeer.taps(ownedBy: vmm.pid) }
        func address(_ name: String) -> String { Harness.run("/usr/sbin/ip", ["-o", "-4", "addr", "show", "dev", name], timeout: 10).stdout }

        let create = vmm.call("PUT", "vm.create", body: config)
        #expect(create.status == 204, "\(create.body)")
        let created = taps()
        #expect(created.count == 2 && created.allSatisfy { $0.hasPrefix("vmtap") }, "\(created)")
        #expect(vmm.call("PUT", "vm.boot").status == 204)
        let running = taps()
        #expect(running == created, "the TAPs opened at vm.create serve the first boot")
        let shown = running.map(address)
        #expect(shown.contains { $0.contains("inet 192.168.249.1/24") } && shown.contains { $0.contains("inet 10.201.6.1/25") }, "\(shown)")
        let info = vmm.call("GET", "vm.info").object
        let nets = (info["config"] as? [String: Any])?["net"] as? [[String: Any]] ?? []
        #expect(nets.count == 2 && nets.allSatisfy { $0["tap"] == nil } && nets[1]["ip"] as? String == "10.201.6.1", "\(nets)")

        #expect(vmm.call("PUT", "vm.shutdown").status == 204)
        #expect(taps().isEmpty && running.allSatisfy { if_nametoindex($0) == 0 }, "a shut-down VM holds no TAP: \(taps())")
        #expect(vmm.call("PUT", "vm.boot").status == 204)
        #expect(taps().count == 2, "a new boot creates them again")
        #expect(vmm.call("PUT", "vm.delete").status == 204)
        #expect(taps().isEmpty)
        #expect(vmm.call("PUT", "vm.create", body: config).status == 204)
        let unbooted = taps()
        #expect(unbooted.count == 2)
        #expect(vmm.call("PUT", "vm.delete").status == 204)
        #expect(taps().isEmpty && unbooted.allSatisfy { if_nametoindex($0) == 0 }, "create → delete leaves no TAP")
        #expect(vmm.call("PUT", "vmm.shutdown").status == 204)
        #expect(vmm.waitForExit() == 0, "\(vmm.stderr)")
    }

    /// Requests still in flight when the VMM exits (reboots queued behind vmm.shutdown) must not crash it
    /// on the way out.
    @Test func exitWithRequestsInFlight() throws {
        let kernel = Harness.writeTinyKernel("api-exit", code: [0x66, 0xBA, 0x00, 0x0A, 0xEE, 0xEB, 0xFD])
        defer { unlink(kernel) }
        for _ in 0..<8 {
            let vmm = try VmmProcess()
            #expect(vmm.call("PUT", "vm.create", body: Harness.vmConfig(kernel: kernel, memory: 16 << 20)).status == 204)
            #expect(vmm.call("PUT", "vm.boot").status == 204)
            var sockets: [Int32] = []
            for index in 0..<12 {  // two reboots, vmm.shutdown, then requests that queue behind it
                guard let fd = try? vmm.connect() else { break }
                let endpoint = index == 2 ? "vmm.shutdown" : index < 2 ? "vm.reboot" : ["vm.reboot", "vm.pause", "vm.delete"][index % 3]
                let text = "PUT /api/v1/\(endpoint) HTTP/1.1\r\nHost: x\r\n\r\n"
                _ = Array(text.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                sockets.append(fd)
            }
            #expect(vmm.waitForExit() == 0, "\(vmm.stderr)")
            #expect(!vmm.stderr.contains("Precondition failed"), "\(vmm.stderr)")
            for fd in sockets { close(fd) }
        }
    }

    /// With a payload on the command line, the API is there while it runs.
    @Test func commandLineVmWithTheApi() throws {
        let kernel = Harness.writeTinyKernel("api-spin", code: [0xEB, 0xFE])
        defer { unlink(kernel) }
        let vmm = try VmmProcess(["--kernel", kernel, "--memory", "size=16M", "--cpus", "boot=2", "--serial", "off"])
        let info = vmm.call("GET", "vm.info").object
        #expect(info["state"] as? String == "Running")
        let config = info["config"] as? [String: Any] ?? [:]
        #expect((config["payload"] as? [String: Any])?["kernel"] as? String == kernel)
        #expect((config["cpus"] as? [String: Int])?["boot_vcpus"] == 2)
        #expect((config["serial"] as? [String: String])?["mode"] == "Off")
        #expect(vmm.call("PUT", "vm.pause").status == 204)
        #expect(vmm.call("PUT", "vm.resume").status == 204)
        kill(vmm.pid, SIGTERM)
        #expect(vmm.waitForExit() == 0, "\(vmm.stderr)")
        #expect(!FileManager.default.fileExists(atPath: vmm.socketPath))
    }
}

/// Bad input to the real binary's API and command lines. Nothing here boots a VM, so it runs without KVM.
@Suite(.serialized) struct ApiBadInputEndToEndTests {
    @Test func everyKindOfBadRequest() throws {
        let vmm = try VmmProcess()
        let cases: [(String, Int, String)] = [
            ("NOT HTTP AT ALL\r\n\r\n", 400, "malformed request line"),
            ("GET /api/v1/vm.nonsense HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown endpoint /api/v1/vm.nonsense"),
            ("GET /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\n\r\n", 405, "vm.boot takes PUT, not GET"),
            ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n", 413, "request body larger than 65536 bytes"),
            ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"payload\": ", 400, "invalid JSON at byte 12: expected a value"),
            ("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 55\r\n\r\n{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": \"1G\"}}",
             400, "memory.size: expected an integer, got a string"),
        ]
        for (request, status, fragment) in cases {
            let response = try vmm.raw(request)
            #expect(response.status == status, "\(request.prefix(60)): \(response.head)")
            #expect((response.json as? [String])?.joined(separator: ": ").contains(fragment) == true, "\(response.body)")
        }
        let missing = vmm.call("PUT", "vm.create", body: Harness.vmConfig(kernel: "/nonexistent/vmlinux"))
        #expect(missing.status == 400)
        #expect(missing.body == #"["invalid VM configuration","payload.kernel: cannot read /nonexistent/vmlinux: No such file or directory"]"#)
        let notElf = vmm.call("PUT", "vm.create", body: Harness.vmConfig(kernel: "/bin/true"))
        #expect(notElf.status == 400 && notElf.body.contains("payload.kernel: /bin/true is not an ELF64 x86-64 kernel"), "\(notElf.body)")
        let net = vmm.call("PUT", "vm.create", body: Harness.vmConfig(kernel: "/bin/true", extra: #", "net": [{"mask": "255.0.255.0"}]"#))
        #expect(net.status == 400 && net.body.contains("net[0].mask: not a contiguous netmask"), "\(net.body)")
        let huge = vmm.call("PUT", "vm.create", body: Harness.vmConfig(kernel: "/bin/true", memory: 1 << 50))
        #expect(huge.status == 400 && huge.body.contains("memory.size: 1073741824 MiB is more than the host's"), "\(huge.body)")
        #expect(vmm.call("GET", "vm.info").status == 404, "nothing was half-created")

        // A client that vanishes mid-request leaves the VMM as it was.
        for cut in [5, 30, 70] {
            let text = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"payload\": {\"kernel\": \"/bin/true\"}}"
            let fd = try vmm.connect()
            _ = Array(text.utf8.prefix(cut)).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(fd)
        }
        #expect(vmm.call("GET", "vmm.ping").status == 200)
        #expect(vmm.call("GET", "vm.info").status == 404)
        #expect(vmm.call("PUT", "vmm.shutdown").status == 204)
        #expect(vmm.waitForExit() == 0)
        #expect(vmm.stderr.isEmpty, "\(vmm.stderr)")
    }

    @Test func remoteCommandLineErrors() throws {
        let vmm = try VmmProcess()
        let unknown = vmm.remote(["frobnicate"])
        #expect(unknown.status == 2 && unknown.stderr == "actor-vmm-remote: error: unknown command 'frobnicate' (see --help)\n")
        #expect(vmm.remote(["boot", "extra"]).status == 2)
        let badFile = vmm.remote(["create", "/nonexistent/config.json"])
        #expect(badFile.status == 1 && badFile.stderr.contains("/nonexistent/config.json: cannot open"), "\(badFile.stderr)")
        let invalid = vmm.remote(["create", "-"], stdin: "{\"payload\": {}}")
        #expect(invalid.status == 1)
        #expect(invalid.stderr == "actor-vmm-remote: error: 400 Bad Request: invalid VM configuration: payload.kernel: missing (ActorVMM boots a kernel; firmware and IGVM payloads are not supported)\n",
                "\(invalid.stderr)")
        let noVm = vmm.remote(["pause"])
        #expect(noVm.status == 1 && noVm.stderr.contains("404 Not Found: cannot pause the VM: no VM has been created"))
        let help = Harness.run(Harness.remotePath, ["--help"])
        #expect(help.status == 0 && help.stdout.contains("shutdown-vmm"))
        let nowhere = Harness.run(Harness.remotePath, ["--api-socket", "/nonexistent/api.sock", "ping"])
        #expect(nowhere.status == 1 && nowhere.stderr.contains("cannot connect to /nonexistent/api.sock"), "\(nowhere.stderr)")
        #expect(Harness.run(Harness.remotePath, ["ping"]).status == 2)
        #expect(vmm.remote(["shutdown-vmm"]).status == 0)
        #expect(vmm.waitForExit() == 0)
    }

    /// `--api-socket` problems are bad configuration: one line, exit code 2, nothing deleted.
    @Test func apiSocketOptionErrors() throws {
        let file = "/tmp/actor-vmm-e2e-\(getpid())-not-a-socket"
        _ = FileManager.default.createFile(atPath: file, contents: Data("keep me".utf8))
        defer { unlink(file) }
        let notSocket = Harness.run(Harness.vmmPath, ["--api-socket", "path=\(file)"], timeout: 30)
        #expect(notSocket.status == 2 && notSocket.stderr == "actor-vmm: error: --api-socket \(file): exists and is not a socket\n")
        #expect((try? String(contentsOfFile: file, encoding: .utf8)) == "keep me")

        let vmm = try VmmProcess()
        let inUse = Harness.run(Harness.vmmPath, ["--api-socket", "path=\(vmm.socketPath)"], timeout: 30)
        #expect(inUse.status == 2 && inUse.stderr.contains("in use (another process is serving it)"), "\(inUse.stderr)")
        #expect(vmm.call("GET", "vmm.ping").status == 200, "the first VMM still serves")
        kill(vmm.pid, SIGKILL)
        _ = vmm.waitForExit()
        // A stale socket file from a VMM that died is replaced.
        let again = try VmmProcess(socketPath: vmm.socketPath)
        #expect(again.call("PUT", "vmm.shutdown").status == 204)
        #expect(again.waitForExit() == 0)

        let noDir = Harness.run(Harness.vmmPath, ["--api-socket", "path=/nonexistent/dir/api.sock"], timeout: 30)
        #expect(noDir.status == 2 && noDir.stderr.contains("cannot bind: No such file or directory"), "\(noDir.stderr)")
        let badFd = Harness.run(Harness.vmmPath, ["--api-socket", "fd=99"], timeout: 30)
        #expect(badFd.status == 2 && badFd.stderr.contains("fd=99: not an open descriptor"), "\(badFd.stderr)")
        let notListening = Harness.run(Harness.vmmPath, ["--api-socket", "fd=0"], timeout: 30)
        #expect(notListening.status == 2 && notListening.stderr.contains("fd=0: not a socket"), "\(notListening.stderr)")
    }
}

extension VmmProcess {
    /// `request` for tests that expect the VMM to answer: a transport failure becomes a status of -1.
    func call(_ method: String, _ endpoint: String, body: String? = nil) -> Response {
        (try? request(method, endpoint, body: body)) ?? Response(status: -1, head: "", body: "")
    }
}
