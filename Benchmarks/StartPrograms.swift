// The programs the start row runs besides actor-vmm: its tiny guest, and the hello-world floor.
import Glibc

/// The start row's guest: one PT_LOAD segment at 2 MiB, entered in long mode by actor-vmm's loader.
enum StartGuest {
    static let base: UInt64 = 0x20_0000

    /// The code: 'S' to COM1, 10,000 OUT/IN round trips to the test device (port 0xA00), 'M', 10,000
    /// more, a newline, then 0x34 to the ACPI sleep register (power off).
    static let code: [UInt8] = {
        func serial(_ byte: UInt8) -> [UInt8] { [0x66, 0xBA, 0xF8, 0x03, 0xB0, byte, 0xEE] }  // mov dx,0x3f8; mov al,b; out dx,al
        let roundTrips: [UInt8] = [0xB9, 0x10, 0x27, 0x00, 0x00,  // mov ecx, 10000
                                   0x66, 0xBA, 0x00, 0x0A,        // mov dx, 0xA00
                                   0xEF, 0xED, 0xFF, 0xC9,        // 1: out dx,eax; in eax,dx; dec ecx
                                   0x75, 0xFA]                    //    jnz 1b
        let powerOff: [UInt8] = [0x66, 0xBA, 0x00, 0x06, 0xB0, 0x34, 0xEE,  // mov dx,0x600; mov al,0x34; out dx,al
                                 0xF4, 0xEB, 0xFD]                          // 2: hlt; jmp 2b
        return serial(UInt8(ascii: "S")) + roundTrips + serial(UInt8(ascii: "M")) + roundTrips
            + serial(UInt8(ascii: "\n")) + powerOff
    }()

    /// A minimal ELF64 executable: header, one program header, the code.
    static func image() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 120)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { for (index, byte) in $0.enumerated() { bytes[offset + index] = byte } }
        }
        bytes.replaceSubrange(0..<7, with: [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1])  // ELF, 64-bit, LE, version 1
        put(UInt16(2), at: 16); put(UInt16(62), at: 18); put(UInt32(1), at: 20)  // ET_EXEC, x86-64
        put(base, at: 24); put(UInt64(64), at: 32)                              // entry, program headers
        put(UInt16(64), at: 52); put(UInt16(56), at: 54); put(UInt16(1), at: 56)
        put(UInt32(1), at: 64); put(UInt32(5), at: 68); put(UInt64(120), at: 72)  // PT_LOAD, R+X, offset
        put(base, at: 80); put(base, at: 88)                                     // vaddr, paddr
        put(UInt64(code.count), at: 96); put(UInt64(code.count), at: 104); put(UInt64(0x1000), at: 112)
        return bytes + code
    }

    static func write(to path: String) throws(BenchError) {
        try writeFile(path, bytes: image())
    }
}

/// The start and memory floor: a Swift hello world linked like actor-vmm (`-static-executable`, lld), which
/// prints one line and then waits in pause() until it is killed. Built once with the toolchain's swiftc
/// into the package's .build folder.
enum HelloFloor {
    static let source = """
        import Glibc
        print("hello, world")
        fflush(stdout)
        pause()

        """

    /// Builds the floor program unless it exists; its path, or an error.
    static func build(root: String) -> Result<String, BenchError> {
        let directory = root + "/.build/actor-vmm-bench"
        let binary = directory + "/hello-static-executable"
        if access(binary, X_OK) == 0 { return .success(binary) }
        do {
            try makeDirectories(directory)
            try writeTextFile(directory + "/hello.swift", source)
        } catch {
            return .failure(error)
        }
        let result = runProcess(["swiftc", "-O", "-static-executable", "-use-ld=lld", directory + "/hello.swift", "-o", binary])
        return result.status == 0 ? .success(binary) : .failure(BenchError("swiftc -static-executable hello.swift failed"))
    }
}
