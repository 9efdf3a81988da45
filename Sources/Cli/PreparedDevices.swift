import ActorVmm
import CKvm
import Devices
import EpollLoop
import Glibc

/// The host side of every configured device, opened before the VM exists: a missing disk, a TAP that
/// cannot be created or an unwritable output file is a configuration error (exit 2), and no VM is created.
struct PreparedDevices {
    /// A virtio device's id (the user's, or nil: the device manager makes one from `idPrefix`, as Cloud
    /// Hypervisor does) and its opened host side, in PCI slot order.
    struct Virtio: Sendable {
        enum Opened: Sendable {
            case block(VirtioBlock.Opened)
            case net(VirtioNet.Opened)
            case rng(VirtioRng.Opened)
            case console(output: any SerialOutput, inputFD: Int32?)
        }
        let id: String?
        let idPrefix: String
        let opened: Opened

        /// A new backend for the device actor (a fresh, unshared object, so it can be sent to the actor);
        /// `loopOfItsOwn` when no other device shares its loop.
        func makeBackend(loopOfItsOwn: Bool = false) -> any VirtioDeviceModel {
            switch opened {
            case .block(let o): VirtioBlock(loopOfItsOwn ? o.onLoopOfItsOwn : o)
            case .net(let o): VirtioNet(o)
            case .rng(let o): VirtioRng(o)
            case .console(let output, let inputFD): VirtioConsole(output: output, inputFD: inputFD)
            }
        }
    }

    var serialOutput: (any SerialOutput)?
    var virtio: [Virtio] = []
    /// The terminal is shared with the guest (serial or console on `tty`).
    var usesTerminal = false

    /// Opens every backend `config` names. A failure names the JSON field and the command-line option (see
    /// ``PrepareError``); whatever was opened before it is closed again (each opened backend owns its
    /// descriptor), so a failed prepare leaves nothing open.
    static func open(_ config: VmConfig) throws(PrepareError) -> PreparedDevices {
        var prepared = PreparedDevices()
        func failure(field: String, option: String, _ value: String, _ error: VirtioError) -> PrepareError {
            PrepareError(config: ConfigError(field: field, "\(value): \(error.message)"), cli: "\(option)=\(value): \(error.message)")
        }
        switch config.serial {
        case .off, .pty: prepared.serialOutput = nil
        case .null: prepared.serialOutput = DiscardOutput()
        case .tty: prepared.serialOutput = FileOutput(fd: 1, owned: false)
        case .file(let path):
            do {
                prepared.serialOutput = try FileOutput(path: path)
            } catch {
                throw failure(field: "serial.file", option: "--serial file", path, error)
            }
        }
        for (index, disk) in config.disks.enumerated() {
            do {
                prepared.virtio.append(Virtio(id: disk.id, idPrefix: "_disk", opened: .block(try VirtioBlock.open(disk.backendOptions))))
            } catch {
                throw failure(field: "disks[\(index)].path", option: "--disk path", disk.path, error)
            }
        }
        for (index, net) in config.net.enumerated() {
            do {
                prepared.virtio.append(Virtio(id: net.id, idPrefix: "_net", opened: .net(try VirtioNet.open(net.backendOptions))))
            } catch {
                throw failure(field: "net[\(index)].tap", option: "--net tap", net.tap ?? TapDevice.nameTemplate, error)
            }
        }
        if let source = config.rng?.source {
            do {
                prepared.virtio.append(Virtio(id: "__rng", idPrefix: "", opened: .rng(try VirtioRng.open(path: source))))
            } catch {
                throw failure(field: "rng.src", option: "--rng src", source, error)
            }
        }
        if let console = try consoleEnds(config.console) {
            prepared.virtio.append(Virtio(id: "__console", idPrefix: "", opened: .console(output: console.output, inputFD: console.input)))
        }
        prepared.usesTerminal = config.serial == .tty || config.console == .tty
        return prepared
    }

    /// The console's output and input descriptor for `mode`.
    private static func consoleEnds(_ mode: ConsoleMode) throws(PrepareError) -> (output: any SerialOutput, input: Int32?)? {
        switch mode {
        case .off: return nil
        case .null: return (DiscardOutput(), nil)
        case .tty: return (FileOutput(fd: 1, owned: false), 0)
        case .file(let path):
            do {
                return (try FileOutput(path: path), nil)
            } catch {
                throw PrepareError(config: ConfigError(field: "console.file", "\(path): \(error.message)"),
                                   cli: "--console file=\(path): \(error.message)")
            }
        case .pty:
            var path = [CChar](repeating: 0, count: 128)
            let fd = ckvm_open_pty(&path, path.count)
            guard fd >= 0 else {
                let reason = "cannot open a pseudo-terminal: \(Errno.current)"
                throw PrepareError(config: ConfigError(field: "console.mode", reason), cli: "--console pty: \(reason)")
            }
            let name = String(decoding: path.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            Log.warning("virtio-console is on pty \(name)")
            return (FileOutput(fd: fd, owned: true), fd)
        }
    }
}
