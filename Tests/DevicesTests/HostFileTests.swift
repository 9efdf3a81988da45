import Devices
import Foundation
import Glibc
import Testing

/// Files a configuration names: a FIFO (or anything else of the wrong kind) is refused without blocking in
/// `open`, and an opened backend's descriptor is closed on every path that drops it.
@Suite struct HostFileTests {
    /// A FIFO with no writer: `open(O_RDONLY)` would block until one came.
    static func makeFifo(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "actor-vmm-\(getpid())-\(name).fifo"
        unlink(path)
        #expect(mkfifo(path, 0o600) == 0)
        return path
    }

    @Test func aFifoIsRefusedWithoutBlocking() throws {
        let fifo = Self.makeFifo("kinds")
        defer { unlink(fifo) }
        let start = monotonicSeconds()
        #expect(throws: VirtioError("is a FIFO (expected a regular file)")) {
            _ = try VirtioBlock.open(.init(path: fifo, readonly: true))
        }
        #expect(throws: VirtioError("is a FIFO (expected a regular file)")) { _ = try VirtioBlock.open(.init(path: fifo)) }
        #expect(throws: VirtioError("is a FIFO (expected a regular file or a character device)")) {
            _ = try VirtioRng.open(path: fifo)
        }
        #expect(throws: VirtioError("is a FIFO (expected a regular file or a character device)")) {
            _ = try HostFile.open(fifo, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o644, allowed: [.regular, .characterDevice])
        }
        #expect(monotonicSeconds() - start < 2, "nothing blocked")
        #expect(throws: VirtioError("is a directory (expected a regular file)")) { _ = try VirtioBlock.open(.init(path: "/tmp")) }
        #expect(throws: VirtioError("is a character device (expected a regular file)")) {
            _ = try VirtioBlock.open(.init(path: "/dev/null", readonly: true))
        }
    }

    @Test func anRngSourceMayBeACharacterDeviceOrAFile() throws {
        _ = try VirtioRng.open(path: "/dev/urandom")
        _ = try VirtioRng.open(path: "/etc/hostname")
    }

    /// Opened backends that are never used (a create that fails later, a delete before boot) close their
    /// descriptors when dropped; so does a backend made from them. (Counted by what the descriptors point
    /// to, a file only this test uses, so suites running in parallel do not disturb the count.)
    @Test func droppedBackendsCloseTheirDescriptors() throws {
        let image = NSTemporaryDirectory() + "actor-vmm-\(getpid())-census.raw"
        _ = FileManager.default.createFile(atPath: image, contents: Data(count: 4096))
        defer { unlink(image) }
        for _ in 0..<50 {
            let disk = try VirtioBlock.open(.init(path: image))
            let rng = try VirtioRng.open(path: image)
            #expect(descriptors(to: image) == 2)
            _ = (disk, rng)
        }
        #expect(descriptors(to: image) == 0, "opened but unused")
        for _ in 0..<50 {
            _ = VirtioBlock(try VirtioBlock.open(.init(path: image)))
            _ = VirtioRng(try VirtioRng.open(path: image))
        }
        #expect(descriptors(to: image) == 0, "made into backends")
    }
}

/// How many of this process's descriptors are open on `path`.
func descriptors(to path: String) -> Int {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return names.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) == path }.count
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
