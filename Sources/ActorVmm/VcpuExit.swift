import CKvm
import EpollLoop

/// What the vCPU loop does after handling one exit.
public enum VcpuEmulation: Equatable, Sendable {
    /// Re-enter the guest.
    case resume
    /// Stop this vCPU and the VM.
    case stop(VmStopReason)
}

/// The two buses a vCPU thread dispatches exits to. Immutable snapshots, shared by all vCPU threads.
public struct IoBuses: Sendable {
    public var pio: Bus
    public var mmio: Bus
    public init(pio: Bus = Bus(), mmio: Bus = Bus()) { self.pio = pio; self.mmio = mmio }
}

/// Handles one `KVM_RUN` exit: a pure function of the `kvm_run` page, the buses and the hand-off, so it
/// can be tested without a thread or /dev/kvm. Accesses to unclaimed addresses read as all-ones and
/// ignore writes, as on a PC bus; they are logged once at debug level.
@inline(__always)
func handleExit(
    _ run: UnsafeMutablePointer<kvm_run>, runSize: Int, buses: IoBuses, handoff: ExitHandoff,
    rip: () -> UInt64
) -> VcpuEmulation {
    switch Int32(run.pointee.exit_reason) {
    case KVM_EXIT_IO:
        let io = run.pointee.io
        let width = Int(io.size)
        let count = Int(io.count)
        let offset = Int(io.data_offset)
        guard [1, 2, 4].contains(width), count >= 1, offset >= 0, offset + width * count <= runSize else {
            return .stop(.unhandledExit(reason: "KVM_EXIT_IO with size \(width) count \(count)", rip: rip()))
        }
        let data = UnsafeMutableRawPointer(run) + offset
        let target = buses.pio.lookup(UInt64(io.port))
        target?.entry.counters.countAccesses(count, width: width)
        let isWrite = io.direction == UInt8(KVM_EXIT_IO_OUT)
        for index in 0..<count {
            access(target, data + index * width, width: width, isWrite: isWrite, handoff: handoff)
        }
        return .resume

    case KVM_EXIT_MMIO:
        let width = Int(run.pointee.mmio.len)
        let address = run.pointee.mmio.phys_addr
        guard width >= 1, width <= 8 else {
            return .stop(.unhandledExit(reason: "KVM_EXIT_MMIO with length \(width)", rip: rip()))
        }
        let isWrite = run.pointee.mmio.is_write != 0
        withUnsafeMutableBytes(of: &run.pointee.mmio.data) { bytes in
            if width & (width - 1) == 0 {
                let target = buses.mmio.lookup(address)
                target?.entry.counters.countAccesses(1, width: width)
                access(target, bytes.baseAddress!, width: width, isWrite: isWrite, handoff: handoff)
            } else {
                splitAccess(address: address, bytes.baseAddress!, width: width, isWrite: isWrite, bus: buses.mmio, handoff: handoff)
            }
        }
        return .resume

    case KVM_EXIT_SHUTDOWN:
        return .stop(.tripleFault(rip: rip()))

    case KVM_EXIT_HLT:
        // With the in-kernel LAPIC, HLT is handled by KVM; seeing it means the guest stopped for good.
        return .stop(.unhandledExit(reason: "KVM_EXIT_HLT (guest halted)", rip: rip()))

    case KVM_EXIT_SYSTEM_EVENT:
        switch Int32(run.pointee.system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN: return .stop(.poweredOff)
        case KVM_SYSTEM_EVENT_RESET: return .stop(.resetRequested(source: "KVM system event"))
        default: return .stop(.unhandledExit(reason: "KVM_EXIT_SYSTEM_EVENT type \(run.pointee.system_event.type)", rip: rip()))
        }

    case KVM_EXIT_INTERNAL_ERROR:
        return .stop(.unhandledExit(reason: "KVM_EXIT_INTERNAL_ERROR suberror \(run.pointee.internal.suberror)", rip: rip()))

    case KVM_EXIT_FAIL_ENTRY:
        let reason = run.pointee.fail_entry.hardware_entry_failure_reason
        return .stop(.unhandledExit(reason: "KVM_EXIT_FAIL_ENTRY hardware reason \(hex(reason))", rip: rip()))

    case KVM_EXIT_INTR:
        return .resume

    default:
        return .stop(.unhandledExit(reason: "exit reason \(run.pointee.exit_reason)", rip: rip()))
    }
}

/// One PIO or MMIO access of `width` bytes at `data` in the `kvm_run` page: a write hands the value to the
/// target, a read stores the target's reply there (all-ones when no device claims the address).
@inline(__always)
func access(_ target: (entry: Bus.Entry, offset: UInt64)?, _ data: UnsafeMutableRawPointer, width: Int,
            isWrite: Bool, handoff: ExitHandoff) {
    if isWrite {
        if let target {
            handoff.write(target.entry.target, offset: target.offset, width: width, value: loadLE(data, width))
        }
    } else {
        let value = target.map { handoff.read($0.entry.target, offset: $0.offset, width: width) } ?? ~0
        storeLE(value, data, width)
    }
}

/// An MMIO access of an odd length (3, 5, 6 or 7 bytes: KVM splits an access that crosses a page into
/// such pieces) done as hardware does it, as naturally aligned 1-, 2- and 4-byte accesses in address
/// order, each to whatever device claims its address.
func splitAccess(address: UInt64, _ data: UnsafeMutableRawPointer, width: Int, isWrite: Bool, bus: Bus,
                 handoff: ExitHandoff) {
    var done = 0
    while done < width {
        let at = address &+ UInt64(done)
        var piece = 4
        while piece > width - done || at % UInt64(piece) != 0 { piece /= 2 }
        let target = bus.lookup(at)
        target?.entry.counters.countAccesses(1, width: piece)
        access(target, data + done, width: piece, isWrite: isWrite, handoff: handoff)
        done += piece
    }
}

@inline(__always)
func loadLE(_ pointer: UnsafeMutableRawPointer, _ width: Int) -> UInt64 {
    switch width {
    case 1: UInt64(pointer.load(as: UInt8.self))
    case 2: UInt64(UInt16(littleEndian: pointer.loadUnaligned(as: UInt16.self)))
    case 4: UInt64(UInt32(littleEndian: pointer.loadUnaligned(as: UInt32.self)))
    default: UInt64(littleEndian: pointer.loadUnaligned(as: UInt64.self))
    }
}

@inline(__always)
func storeLE(_ value: UInt64, _ pointer: UnsafeMutableRawPointer, _ width: Int) {
    switch width {
    case 1: pointer.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
    case 2: pointer.storeBytes(of: UInt16(truncatingIfNeeded: value).littleEndian, as: UInt16.self)
    case 4: pointer.storeBytes(of: UInt32(truncatingIfNeeded: value).littleEndian, as: UInt32.self)
    default: pointer.storeBytes(of: value.littleEndian, as: UInt64.self)
    }
}
