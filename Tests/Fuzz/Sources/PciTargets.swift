@testable import ActorVmm
@testable import Devices
import Glibc

/// PCI configuration mechanism #1 (ports 0xCF8–0xCFF) in front of the host bridge (device 0) and a virtio
/// device (device 1), plus direct MMCONFIG-style accesses to both. Invariants: reads fit their width;
/// identity registers (vendor, device, class) never change; BAR0 always reads back aligned to its size.
func pciConfigTarget(_ bytes: [UInt8]) {
    runOnLoop(fuzzLoop) {
        var input = FuzzInput(bytes)
        let bridge = PciHostBridge(loop: fuzzLoop)
        let controller = NoopMsiController()
        let backend = VirtioRng(.init(file: OwnedDescriptor(dup(zeroFD))))
        let device = try! VirtioPciDevice(name: "fuzz", loop: fuzzLoop, memory: virtioMemory, backend: backend,
                                          barAddress: 0xC000_0000, vectors: try! controller.allocate(count: 2),
                                          msiController: controller)
        let functions: [any PciDevice] = [bridge, device]
        let ports = PciConfigPorts(functions: functions.map { .device(PciConfigWindow(device: $0)) })
        func access(_ target: BusTarget, offset: UInt64, width: Int, write: UInt64?) -> UInt64 {
            guard case .device(let bus) = target else { finding("a configuration window that is not a device") }
            if let write { bus.isolatedWrite(offset: offset, width: width, value: write); return 0 }
            return bus.isolatedRead(offset: offset, width: width)
        }
        var steps = 0
        while !input.isEmpty, steps < 128 {
            steps += 1
            let op = input.byte(), width = input.width()
            switch op % 4 {
            case 0:  // CONFIG_ADDRESS / CONFIG_DATA port access
                let offset = UInt64(input.byte() % 8)
                let value: UInt64? = op & 0x10 != 0 ? input.integer() : nil
                var result: UInt64
                switch ports.resolve(offset: offset, width: width, write: value) {
                case .handled(let handled): result = handled
                case .forward(let target, let register): result = access(target, offset: register, width: width, write: value)
                }
                guard value != nil || result <= widthMask(width) else { finding("port \(offset) width \(width) read \(result)") }
            case 1:  // a direct configuration write
                let function = functions[Int(op >> 4) % 2], offset = UInt64(input.integer(UInt16.self) % 0x1000)
                let value = input.integer(UInt64.self)
                function.assumeIsolated { $0.configWrite(offset: offset, width: width, value: value) }
            default:  // a direct configuration read
                let function = functions[Int(op >> 4) % 2], offset = UInt64(input.integer(UInt16.self) % 0x1000)
                let value = function.assumeIsolated { $0.configRead(offset: offset, width: width) }
                guard value <= widthMask(width) else { finding("config \(offset) width \(width) read \(value)") }
            }
        }
        let identity = device.assumeIsolated { d in
            (d.configRead(offset: 0, width: 4), d.configRead(offset: 8, width: 4), d.configRead(offset: 0x10, width: 4))
        }
        guard identity.0 == 0x1044_1AF4, identity.1 >> 8 == 0x00FF_0000 >> 8 || identity.1 >> 16 == 0x00FF else {
            finding("virtio identity changed: \(identity.0), class \(identity.1)")
        }
        guard identity.2 & 0x7FF0 == 0 else { finding("BAR0 reads \(identity.2), not aligned to its 32 KiB size") }
        guard bridge.assumeIsolated({ $0.configRead(offset: 0, width: 4) }) == 0x0D57_8086 else { finding("host bridge identity changed") }
    }
}

/// MSI-X on its own: table and PBA accesses at any offset and width inside their BAR windows, control
/// writes and signals of any vector number. Invariants: reads fit their width; a vector pending in the PBA
/// is one that was signalled while masked; no out-of-range vector is ever delivered or routed.
func msixTarget(_ bytes: [UInt8]) {
    var input = FuzzInput(bytes)
    let count = Int(input.byte() % 9) + 1
    var msix = Msix(targets: (0..<count).map { NoopVector(gsi: UInt32($0)) }, controller: NoopMsiController())
    var signalled = Set<Int>()
    var steps = 0
    while !input.isEmpty, steps < 256 {
        steps += 1
        let op = input.byte()
        let width = 1 << Int((op >> 4) & 3)
        switch op & 7 {
        case 0: msix.writeTable(offset: UInt64(input.integer(UInt16.self) % 0x1000), width: width, value: input.integer())
        case 1:
            let value = msix.readTable(offset: UInt64(input.integer(UInt16.self) % 0x1000), width: width)
            guard value <= widthMask(width) else { finding("table read of width \(width) returned \(value)") }
        case 2:
            let value = msix.readPba(offset: UInt64(input.integer(UInt16.self) % 0x1000), width: width)
            guard value <= widthMask(width) else { finding("PBA read of width \(width) returned \(value)") }
        case 3: msix.setControl(highByte: input.byte())
        case 4:
            let vector = Int(input.integer(UInt16.self)) - (op & 8 != 0 ? 0x8000 : 0)
            if vector >= 0 && vector < count { signalled.insert(vector) }
            msix.signal(vector)
        case 5: msix.reset(); signalled = []
        default:
            for vector in 0..<count where msix.pending[vector] && !signalled.contains(vector) {
                finding("vector \(vector) pending but never signalled")
            }
        }
    }
    guard msix.entries.count == count, msix.pending.count == count else { finding("the table changed size") }
}
