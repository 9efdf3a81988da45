// TestDevice.swift: `pio` and `mmio`, round trips to the VMM's test device.
//
// The device has the same 16-byte register layout at I/O ports 0x0A00-0x0A0F and at MMIO
// 0xFEA00000, accessed with 1, 2 or 4 bytes:
//   0x0  write: store V (zero-extended); read (size s): the low s bytes of ~V (32-bit NOT)
//   0x4  read: number of writes to 0x0 so far (32-bit, wrapping)
//   0x8  read: magic 0x41564D54 ("TMVA"); write: ignored (a doorbell, for latency tests)

enum TestDevice {
    static let portBase: UInt16 = 0x0A00
    static let mmioBase: UInt64 = 0xFEA0_0000

    static let value = 0x0
    static let writeCount = 0x4
    static let magic = 0x8
    static let magicValue: UInt32 = 0x4156_4D54

    static let roundTrips = 10_000
}

func portTestDeviceTest(_ context: inout TestContext) -> Bool {
    testDeviceRoundTrips(PortBlock(base: TestDevice.portBase), &context.detail)
}

func mmioTestDeviceTest(_ context: inout TestContext) -> Bool {
    testDeviceRoundTrips(MmioBlock(base: TestDevice.mmioBase), &context.detail)
}

/// The checks, the same over either transport: identify the device, try 1- and 2-byte
/// accesses once, then time `roundTrips` 4-byte write/read pairs with rdtsc and check that
/// the device counted every write. Detail on success: `n=10000 cycles_per_rt=<cycles>`.
func testDeviceRoundTrips(_ device: some RegisterBlock, _ detail: inout LineBuffer) -> Bool {
    let magic = device.read32(at: TestDevice.magic)
    guard magic == TestDevice.magicValue else {
        detail.write("magic=")
        detail.write(hex: magic, digits: 8)
        return false
    }
    var passed = true
    let writesBefore = device.read32(at: TestDevice.writeCount)

    // Narrow accesses: the device stores the value zero-extended and answers with its NOT.
    device.write8(0x5A, at: TestDevice.value)
    let read8 = device.read8(at: TestDevice.value)
    let read8Wide = device.read32(at: TestDevice.value)
    device.write16(0x1234, at: TestDevice.value)
    let read16 = device.read16(at: TestDevice.value)
    let read16Wide = device.read32(at: TestDevice.value)
    let narrowWrites: UInt32 = 2
    if read8 != 0xA5 || read8Wide != 0xFFFF_FFA5 || read16 != 0xEDCB || read16Wide != 0xFFFF_EDCB {
        passed = false
        detail.write("narrow=")
        detail.write(hex: read8, digits: 2)
        detail.write(byte: UInt8(ascii: ","))
        detail.write(hex: read8Wide, digits: 8)
        detail.write(byte: UInt8(ascii: ","))
        detail.write(hex: read16, digits: 4)
        detail.write(byte: UInt8(ascii: ","))
        detail.write(hex: read16Wide, digits: 8)
        detail.write(" ")
    }

    // The timed loop: one write and one read per round trip, each value different.
    var mismatches = 0
    var firstMismatch = (index: 0, wrote: UInt32(0), read: UInt32(0))
    let start = CPU.timestamp()
    for index in 0..<TestDevice.roundTrips {
        let value = UInt32(truncatingIfNeeded: index) &* 0x9E37_79B9 ^ 0x0F0F_0F0F
        device.write32(value, at: TestDevice.value)
        let answer = device.read32(at: TestDevice.value)
        if answer != ~value {
            if mismatches == 0 { firstMismatch = (index, value, answer) }
            mismatches += 1
        }
    }
    let cycles = CPU.timestamp() &- start
    let writes = device.read32(at: TestDevice.writeCount) &- writesBefore
    let expectedWrites = UInt32(TestDevice.roundTrips) + narrowWrites

    if mismatches != 0 {
        passed = false
        detail.write("mismatches=")
        detail.write(decimal: mismatches)
        detail.write(" first_i=")
        detail.write(decimal: firstMismatch.index)
        detail.write(" wrote=")
        detail.write(hex: firstMismatch.wrote, digits: 8)
        detail.write(" read=")
        detail.write(hex: firstMismatch.read, digits: 8)
        detail.write(" ")
    }
    if writes != expectedWrites {
        passed = false
        detail.write("writes=")
        detail.write(decimal: writes)
        detail.write(" expected=")
        detail.write(decimal: expectedWrites)
        detail.write(" ")
    }
    detail.write("n=")
    detail.write(decimal: TestDevice.roundTrips)
    detail.write(" cycles_per_rt=")
    detail.write(decimal: cycles / UInt64(TestDevice.roundTrips))
    return passed
}
