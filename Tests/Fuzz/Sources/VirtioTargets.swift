import ActorVmm
@testable import Devices
import Glibc

/// Builds a device around `makeBackend()` on the fuzz loop, runs the script against it, and drops it.
/// `memory` is the guest RAM (the scripts' rings and buffers live in its first MiB); `check` runs on the
/// device after the script (an invariant that traps when broken).
func runVirtioScript(_ bytes: [UInt8], host: HostInput = HostInput(), memory: GuestMemory = virtioMemory,
                     check: (@Sendable (isolated VirtioPciDevice) -> Void)? = nil,
                     _ makeBackend: @escaping @Sendable () -> sending any VirtioDeviceModel) {
    runOnLoop(fuzzLoop) {
        let backend = makeBackend()
        let controller = NoopMsiController()
        let vectors = try! controller.allocate(count: backend.queueCount + 1)
        let device = try! VirtioPciDevice(name: "fuzz", loop: fuzzLoop, memory: memory, backend: backend,
                                          barAddress: 0xC000_0000, vectors: vectors, msiController: controller)
        device.assumeIsolated { device in
            device.runFuzzScript(bytes, host: host)
            check?(device)
        }
    }
}

/// A socket pair (datagrams or a stream), non-blocking: the device's end and the harness's end.
func nonBlockingPair(datagrams: Bool) -> (device: Int32, peer: Int32) {
    var fds: [Int32] = [0, 0]
    let type = (datagrams ? Int32(SOCK_DGRAM.rawValue) : Int32(SOCK_STREAM.rawValue)) | Int32(SOCK_NONBLOCK.rawValue)
        | Int32(SOCK_CLOEXEC.rawValue)
    precondition(socketpair(AF_UNIX, type, 0, &fds) == 0, "socketpair")
    return (fds[0], fds[1])
}

/// A 64 KiB disk image (a deleted temporary file), opened once; each input's backend gets a duplicate.
let diskFD: Int32 = {
    var template = Array("/tmp/actor-vmm-fuzz-disk-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    precondition(fd >= 0 && ftruncate(fd, 64 * 1024) == 0, "cannot create the fuzz disk image")
    unlink(template)
    return fd
}()

/// virtio-blk: any request (header, data, status) against a 128-sector image.
func virtioBlockTarget(_ bytes: [UInt8]) {
    let fd = dup(diskFD)
    let readonly = bytes.first.map { $0 & 0x20 != 0 } ?? false
    runVirtioScript(bytes) {
        VirtioBlock(.init(file: OwnedDescriptor(fd), options: .init(path: "fuzz.img", readonly: readonly), capacitySectors: 128,
                           idBytes: Array("fuzz-disk".utf8) + [UInt8](repeating: 0, count: 11)))
    }
}

/// The device and harness ends of the fake TAP (datagrams keep frame boundaries, as a TAP does).
let netPair = nonBlockingPair(datagrams: true)

/// virtio-net: transmitted headers and frames, received frames of any size into any buffers.
func virtioNetTarget(_ bytes: [UInt8]) {
    let fd = dup(netPair.device)
    runVirtioScript(bytes, host: HostInput(peer: netPair.peer, deviceEnd: netPair.device, datagrams: true)) {
        VirtioNet(.init(tap: TapDevice(adopting: fd, name: "fuzz0"),
                         options: .init(tap: "fuzz0", mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56])))
    }
}

/// A console output that drops bytes but checks each write is a real buffer.
struct CheckedDiscard: SerialOutput {
    func write(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count <= 64 * 1024 else { finding("console wrote \(bytes.count) bytes in one call") }
    }
}

let consolePair = nonBlockingPair(datagrams: false)

/// virtio-console: transmit to a sink, receive host input into any buffers.
func virtioConsoleTarget(_ bytes: [UInt8]) {
    runVirtioScript(bytes, host: HostInput(peer: consolePair.peer, deviceEnd: consolePair.device)) {
        VirtioConsole(output: CheckedDiscard(), inputFD: consolePair.device)
    }
}

/// /dev/zero, opened once: the entropy source (the bytes do not matter, only the buffer handling).
let zeroFD: Int32 = open("/dev/zero", O_RDONLY | O_CLOEXEC)

/// virtio-rng: any chain of writable (and readable) buffers.
func virtioRngTarget(_ bytes: [UInt8]) {
    let fd = dup(zeroFD)
    runVirtioScript(bytes) { VirtioRng(.init(file: OwnedDescriptor(fd))) }
}

/// Guest RAM for virtio-mem: the scripts' MiB and the device's region (128 MiB at 128 MiB, 64 blocks of 2 MiB).
let virtioMemMemory = guardedMemory([(GuestAddress(0), 0x100000), (GuestAddress(128 << 20), 128 << 20)])

/// virtio-mem: any request against a region with 64 MiB requested; the device's books must balance (the
/// bitmap's plugged blocks are plugged_size, within the region) whatever the guest sent.
func virtioMemTarget(_ bytes: [UInt8]) {
    runVirtioScript(bytes, memory: virtioMemMemory, check: { device in
        guard let mem = device.backend as? VirtioMem else { finding("not a virtio-mem backend") }
        guard UInt64(mem.blocks.pluggedCount) * mem.blockSize == mem.pluggedSize, mem.pluggedSize <= mem.requestedSize else {
            finding("virtio-mem: \(mem.blocks.pluggedCount) blocks plugged, plugged_size \(mem.pluggedSize)")
        }
    }) { try! VirtioMem(start: 128 << 20, size: 128 << 20, requested: 64 << 20) }
}

/// The virtio-pci transport itself: the same scripts as the devices but biased to register accesses (the
/// backend is rng, the simplest). Every byte of the common configuration, ISR, notify and MSI-X regions and
/// of configuration space is reachable through operations 6–9.
func virtioPciTarget(_ bytes: [UInt8]) {
    // Map the input's operation bytes onto register operations only (6, 7, 8, 9, 3, 12).
    var input = FuzzInput(bytes)
    var script = [input.byte(), input.byte()]
    let registerOps: [UInt8] = [6, 7, 8, 9, 3, 12, 6, 7]
    while !input.isEmpty {
        let op = input.byte()
        script.append((op & 0xF0) | registerOps[Int(op & 7)])
        script += input.take(11)
    }
    let fd = dup(zeroFD)
    runVirtioScript(script) { VirtioRng(.init(file: OwnedDescriptor(fd))) }
}
