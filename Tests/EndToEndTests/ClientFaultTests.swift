import Foundation
import Glibc
import Testing

/// What a misbehaving client can do to the real binary through its configuration: name a FIFO where a file
/// belongs, or create and delete VMs without end. Nothing here boots a VM, so it runs without KVM.
@Suite(.serialized) struct ClientFaultEndToEndTests {
    static func makeFifo(_ name: String) -> String {
        let path = "/tmp/actor-vmm-e2e-\(getpid())-\(name).fifo"
        unlink(path)
        #expect(mkfifo(path, 0o600) == 0)
        return path
    }

    /// A FIFO with no peer would block `open` on the controller's thread: vm.create, and everything queued
    /// behind it (vm.info, vm.delete, vmm.shutdown, SIGTERM), would stall. Each field is refused at once.
    @Test func aFifoInAConfigIsRefusedAndNothingStalls() throws {
        let kernel = Harness.writeTinyKernel("fifo", code: [0xEB, 0xFE])
        let fifo = Self.makeFifo("config")
        defer { unlink(kernel); unlink(fifo) }
        let vmm = try VmmProcess()
        let cases: [(String, String)] = [
            (Harness.vmConfig(kernel: fifo), "payload.kernel: cannot read \(fifo): not a regular file (a FIFO)"),
            (#"{"payload": {"kernel": "\#(kernel)", "initramfs": "\#(fifo)"}, "memory": {"size": 16777216}}"#,
             "payload.initramfs: \(fifo): cannot read: not a regular file (a FIFO)"),
            (Harness.vmConfig(kernel: kernel, memory: 16 << 20, extra: #", "disks": [{"path": "\#(fifo)", "readonly": true}]"#),
             "disks[0].path: \(fifo): is a FIFO (expected a regular file)"),
            (Harness.vmConfig(kernel: kernel, memory: 16 << 20, extra: #", "rng": {"src": "\#(fifo)"}"#),
             "rng.src: \(fifo): is a FIFO (expected a regular file or a character device)"),
            (Harness.vmConfig(kernel: kernel, memory: 16 << 20, serialFile: fifo),
             "serial.file: \(fifo): is a FIFO (expected a regular file or a character device)"),
            (Harness.vmConfig(kernel: kernel, memory: 16 << 20, extra: #", "console": {"mode": "File", "file": "\#(fifo)"}"#),
             "console.file: \(fifo): is a FIFO (expected a regular file or a character device)"),
        ]
        for (config, message) in cases {
            let start = Date()
            let response = vmm.call("PUT", "vm.create", body: config)
            #expect(response.status == 400 && response.body == #"["invalid VM configuration","\#(message)"]"#, "\(response.body)")
            #expect(Date().timeIntervalSince(start) < 3, "answered at once")
            #expect(vmm.call("GET", "vm.info").status == 404, "nothing was created")
        }
        #expect(vmm.call("PUT", "vm.delete").status == 204)
        kill(vmm.pid, SIGTERM)
        #expect(vmm.waitForExit(timeout: 10) == 0, "SIGTERM still stops the VMM: \(vmm.stderr)")
    }

    /// The same files on the command line: one line naming the option, exit code 2, at once.
    @Test func aFifoOnTheCommandLineIsRefused() throws {
        let kernel = Harness.writeTinyKernel("fifo-cli", code: [0xEB, 0xFE])
        let fifo = Self.makeFifo("cli")
        defer { unlink(kernel); unlink(fifo) }
        let vm = ["--kernel", kernel, "--memory", "size=16M", "--serial", "off"]
        let cases: [([String], String)] = [
            (["--kernel", fifo], "--kernel \(fifo): cannot read: not a regular file (a FIFO)"),
            (vm + ["--initramfs", fifo], "--initramfs \(fifo): cannot read: not a regular file (a FIFO)"),
            (vm + ["--disk", "path=\(fifo),readonly=on"], "--disk path=\(fifo): is a FIFO (expected a regular file)"),
            (vm + ["--rng", "src=\(fifo)"], "--rng src=\(fifo): is a FIFO (expected a regular file or a character device)"),
            (vm.dropLast(2) + ["--serial", "file=\(fifo)"], "--serial file=\(fifo): is a FIFO (expected a regular file or a character device)"),
            (vm + ["--console", "file=\(fifo)"], "--console file=\(fifo): is a FIFO (expected a regular file or a character device)"),
        ]
        for (arguments, message) in cases {
            let result = Harness.run(Harness.vmmPath, arguments, timeout: 10)
            #expect(result.status == 2 && result.stderr == "actor-vmm: error: \(message)\n", "\(arguments): \(result.stderr)")
        }
    }

    /// A kernel or initramfs larger than the guest's RAM (here 1 TiB, sparse) is refused before it is read:
    /// reading it would exhaust the VMM's memory (it crashed) or hold the controller for minutes.
    @Test func aHugeKernelOrInitramfsIsRefusedUnread() throws {
        let kernel = Harness.writeTinyKernel("huge-ok", code: [0xEB, 0xFE])
        let huge = "/tmp/actor-vmm-e2e-\(getpid())-huge.img"
        let fd = open(huge, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        #expect(ftruncate(fd, 1 << 40) == 0)
        close(fd)
        defer { unlink(kernel); unlink(huge) }
        let cli = Harness.run(Harness.vmmPath, ["--kernel", huge, "--memory", "size=16M", "--serial", "off"], timeout: 30)
        #expect(cli.status == 2 && cli.stderr == "actor-vmm: error: --kernel \(huge): cannot read: 1099511627776 bytes is more than the guest's RAM (16777216 bytes)\n",
                "\(cli.status) \(cli.stderr)")
        let vmm = try VmmProcess()
        let start = Date()
        let response = vmm.call("PUT", "vm.create", body: Harness.vmConfig(kernel: huge, memory: 16 << 20))
        #expect(response.body == #"["invalid VM configuration","payload.kernel: cannot read \#(huge): 1099511627776 bytes is more than the guest's RAM (16777216 bytes)"]"#,
                "\(response.body)")
        let initrd = vmm.call("PUT", "vm.create", body: #"{"payload": {"kernel": "\#(kernel)", "initramfs": "\#(huge)"}, "memory": {"size": 16777216}}"#)
        #expect(initrd.body.contains("payload.initramfs: \(huge): cannot read: 1099511627776 bytes is more than the guest's RAM"), "\(initrd.body)")
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(vmm.call("GET", "vm.info").status == 404)
        #expect(vmm.call("PUT", "vmm.shutdown").status == 204)
        #expect(vmm.waitForExit() == 0)
    }

    /// Every descriptor a create opens (disk, rng, serial and console files) is closed again by a delete
    /// before any boot, and by a create that fails late (after the disk is open); counted in /proc.
    @Test func createAndDeleteLeakNoDescriptor() throws {
        let kernel = Harness.writeTinyKernel("census", code: [0xEB, 0xFE])
        let base = "/tmp/actor-vmm-e2e-\(getpid())-census"
        let image = base + ".raw", serial = base + ".serial", console = base + ".console"
        _ = FileManager.default.createFile(atPath: image, contents: Data(count: 1 << 20))
        defer { for path in [kernel, image, serial, console] { unlink(path) } }
        let vmm = try VmmProcess()
        let idle = vmm.openDescriptors()
        let devices = #", "disks": [{"path": "\#(image)"}, {"path": "\#(image)", "readonly": true}], "console": {"mode": "File", "file": "\#(console)"}"#
        let good = Harness.vmConfig(kernel: kernel, memory: 16 << 20, serialFile: serial, extra: devices + #", "rng": {"src": "/dev/urandom"}"#)
        let late = Harness.vmConfig(kernel: kernel, memory: 16 << 20, serialFile: serial, extra: devices + #", "rng": {"src": "/nonexistent/rng"}"#)
        for _ in 0..<40 {
            #expect(vmm.call("PUT", "vm.create", body: good).status == 204)
            #expect(vmm.openDescriptors().filter { $0 == image }.count == 2, "both disks are open while the VM exists")
            #expect(vmm.call("PUT", "vm.delete").status == 204)
            let failed = vmm.call("PUT", "vm.create", body: late)
            #expect(failed.body == #"["invalid VM configuration","rng.src: /nonexistent/rng: cannot open: No such file or directory"]"#, "\(failed.body)")
        }
        #expect(vmm.openDescriptors() == idle)
        #expect(vmm.call("PUT", "vmm.shutdown").status == 204)
        #expect(vmm.waitForExit() == 0)
    }

    /// A config Cloud Hypervisor wrote with every default spelled out (Tests/Fixtures; its TAP left out: creating
    /// one needs privileges) creates a VM through the real binary.
    @Test func aCloudHypervisorConfigWithEveryDefaultIsAccepted() throws {
        let kernel = Harness.writeTinyKernel("ch-config", code: [0xEB, 0xFE])
        let image = "/tmp/actor-vmm-e2e-\(getpid())-ch.raw"
        _ = FileManager.default.createFile(atPath: image, contents: Data(count: 1 << 20))
        defer { unlink(kernel); unlink(image) }
        let text = try String(contentsOfFile: Harness.packageRoot + "/Tests/Fixtures/cloud-hypervisor-vm-config.json", encoding: .utf8)
            .replacingOccurrences(of: "@KERNEL@", with: kernel).replacingOccurrences(of: "@DISK@", with: image)
        var object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        object["net"] = nil
        let body = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        let vmm = try VmmProcess()
        let create = vmm.call("PUT", "vm.create", body: body)
        #expect(create.status == 204, "\(create.body)")
        let config = vmm.call("GET", "vm.info").object["config"] as? [String: Any] ?? [:]
        #expect((config["cpus"] as? [String: Any])?["max_phys_bits"] as? Int == 46)
        #expect((config["disks"] as? [[String: Any]])?.first?["id"] as? String == "_disk0")
        #expect(vmm.call("PUT", "vmm.shutdown").status == 204)
        #expect(vmm.waitForExit() == 0)
    }
}
