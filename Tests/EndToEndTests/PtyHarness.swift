import CKvm
import Foundation
import Glibc

/// A pseudo-terminal pair for running `actor-vmm` as a person does, with a terminal on stdin and stdout:
/// the test types into the master side and reads the screen from it; the VMM gets the slave side.
final class Pty {
    let master: Int32
    let slave: Int32
    private(set) var screen = ""

    init() throws {
        var name = [CChar](repeating: 0, count: 128)
        master = ckvm_open_pty(&name, name.count)  // non-blocking master; the slave's name in `name`
        guard master >= 0 else { throw PtyError("cannot open a pseudo-terminal: errno \(errno)") }
        let path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard slave >= 0 else { throw PtyError("open slave: \(errno)") }
    }

    deinit {
        close(master)
        close(slave)
    }

    /// The terminal's current settings (what the VMM changes and must restore).
    var settings: termios {
        var t = termios()
        tcgetattr(slave, &t)
        return t
    }

    /// Starts `path` with the slave as stdin, stdout and stderr (stderr goes to `stderrPath` if given).
    func spawn(_ path: String, _ arguments: [String], stderrPath: String? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let terminal = FileHandle(fileDescriptor: slave, closeOnDealloc: false)
        process.standardInput = terminal
        process.standardOutput = terminal
        if let stderrPath {
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: stderrPath)
        } else {
            process.standardError = terminal
        }
        try process.run()
        return process
    }

    /// Types `text` at the terminal.
    func type(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { write(master, $0.baseAddress, $0.count) }
    }

    /// Reads what the terminal shows until `done(screen)` holds or `timeout` seconds pass; true if it held.
    @discardableResult
    func read(timeout: Double, until done: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !done(screen) {
            guard Date() < deadline else { return false }
            var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(master, $0.baseAddress, $0.count) }
            if n > 0 { screen += String(decoding: buffer[0..<n], as: UTF8.self) }
        }
        return true
    }

    /// Waits for `process` to end (reading the screen meanwhile); false if it is still running at `timeout`.
    func wait(for process: Process, timeout: Double) -> Bool {
        read(timeout: timeout) { _ in !process.isRunning }
        guard !process.isRunning else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return false
        }
        process.waitUntilExit()
        read(timeout: 0.2) { _ in false }  // what was still in flight
        return true
    }
}

struct PtyError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension termios {
    /// The flags a raw-mode switch changes, for comparing settings before and after.
    var modeFlags: [UInt32] { [c_iflag, c_oflag, c_cflag, c_lflag] }
}
