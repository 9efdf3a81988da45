// Row 5: VMM start and memory overhead of the real `actor-vmm` release binary (static Swift stdlib),
// run as a child process with 1 vCPU and 128 MiB.
//
// The guest is a tiny ELF written here (`StartGuest`) whose third instruction writes 'S' to the serial
// port, so "first guest instruction" is observable from outside: the byte reaches the child's stdout.
// It then does 10,000 OUT/IN round trips to the test device (through the actor hand-off), writes 'M',
// does 10,000 more, writes a newline and powers off.
// - Start (wall): from just before posix_spawn until 'S' arrives on our end of the stdout pipe (so it
//   includes the pipe's wake-up, a few microseconds).
// - Start (CPU): the child's CPU time (all threads, user + system) at that moment, read through its
//   process CPU clock (clock_getcpuclockid), in nanoseconds.
// - Memory: the child is stopped (SIGSTOP) at 'S' and at 'M', and /proc/PID/status (VmRSS, RssAnon,
//   RssFile) and /proc/PID/smaps (Rss of the guest-RAM mapping: the anonymous mapping of exactly the
//   guest's size) are read. Overhead = VmRSS − guest RAM Rss: what the VMM costs beyond the guest
//   pages touched.
import EpollLoop
import Glibc

struct StartSample: Sendable {
    var wallMilliseconds: Double
    var cpuMilliseconds: Double
    var atStart: MemorySnapshot
    var steady: MemorySnapshot
}

/// Memory of a stopped child, in KiB.
struct MemorySnapshot: Sendable {
    var vmRSS: Int
    var rssAnon: Int
    var rssFile: Int
    var guestRSS: Int
    /// Everything but guest RAM.
    var overhead: Int { vmRSS - guestRSS }
    /// Private anonymous memory (heap, stacks, data) beyond guest RAM.
    var anonymousOverhead: Int { rssAnon - guestRSS }
}

struct StartBench {
    let vmmPath: String
    let runs: Int
    let directory: String
    static let memoryMiB = 128

    func run(progress: (String) -> Void) -> Result<[StartSample], BenchError> {
        let guestPath = directory + "/start-guest-\(getpid()).elf"
        do { try StartGuest.write(to: guestPath) } catch { return .failure(error) }
        defer { unlink(guestPath) }
        var samples: [StartSample] = []
        for index in 0..<runs {
            do {
                let sample = try runOnce(guestPath: guestPath)
                samples.append(sample)
                progress("start run \(index + 1)/\(runs): \(fixed(sample.wallMilliseconds, 2)) ms wall, "
                         + "\(fixed(sample.cpuMilliseconds, 2)) CPU ms, overhead "
                         + "\(fixed(Double(sample.steady.overhead) / 1024, 2)) MiB")
            } catch {
                return .failure(error as? BenchError ?? BenchError("\(error)"))
            }
        }
        return .success(samples)
    }

    func runOnce(guestPath: String) throws -> StartSample {
        let arguments = [vmmPath, "--kernel", guestPath,
                         "--memory", "size=\(Self.memoryMiB)M", "--cpus", "boot=1", "--serial", "tty", "--console", "off"]
        var output: [Int32] = [0, 0], errors: [Int32] = [0, 0]
        guard makePipe(&output), makePipe(&errors) else {
            throw BenchError("pipe: \(Errno.current)")
        }
        defer { close(output[0]); close(errors[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errors[1], 2)
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }

        var pid: pid_t = 0
        let spawnTime = monotonicNanoseconds()
        let spawned = posix_spawn(&pid, vmmPath, &actions, nil, argv, environ)
        close(output[1]); close(errors[1])
        guard spawned == 0 else { throw BenchError("cannot start \(vmmPath): \(Errno(rawValue: spawned))") }
        var reaped = false
        defer {
            if !reaped { kill(pid, SIGKILL); _ = waitForExit(pid) }
        }
        var cpuClock = clockid_t()
        let haveClock = clock_getcpuclockid(pid, &cpuClock) == 0

        // Wait for the guest's first output byte, its third instruction.
        var text: [UInt8] = []
        var byte: UInt8 = 0
        guard readRetrying(output[0], &byte, 1) == 1 else {
            reaped = true
            _ = waitForExit(pid)
            throw BenchError("actor-vmm wrote nothing: \(readAll(errors[0]))")
        }
        let firstOutput = monotonicNanoseconds()
        var cpu = timespec()
        let cpuNanoseconds = haveClock && clock_gettime(cpuClock, &cpu) == 0
            ? Double(cpu.tv_sec) * 1e9 + Double(cpu.tv_nsec) : .nan
        text.append(byte)
        let atStart = try snapshot(pid)

        // Steady state: after 10,000 round trips through the actor hand-off ('M').
        var steady: MemorySnapshot?
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { readRetrying(output[0], $0.baseAddress!, $0.count) }
            guard count > 0 else { break }
            text += chunk[0..<count]
            if steady == nil, text.contains(UInt8(ascii: "M")) {
                steady = try snapshot(pid)
            }
        }
        reaped = true
        let status = waitForExit(pid)
        let stdout = String(decoding: text, as: UTF8.self)
        guard status == 0, stdout == "SM\n" else {
            throw BenchError("actor-vmm exited with status \(status): \(readAll(errors[0])) \(stdout.suffix(200))")
        }
        guard let steady else { throw BenchError("the guest never wrote 'M'") }
        return StartSample(wallMilliseconds: Double(firstOutput - spawnTime) / 1e6,
                           cpuMilliseconds: cpuNanoseconds / 1e6, atStart: atStart, steady: steady)
    }

    /// Stops `pid`, reads its memory figures, lets it continue.
    func snapshot(_ pid: pid_t) throws -> MemorySnapshot {
        kill(pid, SIGSTOP)
        var status: Int32 = 0
        while waitpid(pid, &status, WUNTRACED) < 0 && errno == EINTR {}
        defer { kill(pid, SIGCONT) }
        guard let statusText = readTextFile("/proc/\(pid)/status"), let smaps = readTextFile("/proc/\(pid)/smaps") else {
            throw BenchError("cannot read /proc/\(pid)")
        }
        guard let rss = procStatusKiB(statusText, field: "VmRSS"), let anon = procStatusKiB(statusText, field: "RssAnon"),
              let file = procStatusKiB(statusText, field: "RssFile") else {
            throw BenchError("no VmRSS/RssAnon/RssFile for \(pid)")
        }
        guard let guest = guestMappingRssKiB(smaps: smaps, sizeKiB: Self.memoryMiB * 1024) else {
            throw BenchError("no \(Self.memoryMiB) MiB anonymous mapping in /proc/\(pid)/smaps")
        }
        return MemorySnapshot(vmRSS: rss, rssAnon: anon, rssFile: file, guestRSS: guest)
    }

    /// Waits for `pid` to exit (continuing it if it is stopped); its exit status, or 128 + signal.
    func waitForExit(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WUNTRACED)
            if result < 0 { return errno == EINTR ? waitForExit(pid) : -1 }
            let signal = status & 0x7F
            if signal == 0 { return (status >> 8) & 0xFF }        // exited
            if signal == 0x7F { kill(pid, SIGCONT); continue }   // stopped
            return 128 + signal
        }
    }
}

/// `read` that retries EINTR.
func readRetrying(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    while true {
        let n = read(fd, buffer, count)
        if n >= 0 || errno != EINTR { return n }
    }
}

/// Everything left in `fd`, as text.
func readAll(_ fd: Int32) -> String {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { readRetrying(fd, $0.baseAddress!, $0.count) }
        guard n > 0 else { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A `Name:   1234 kB` field of /proc/PID/status, in KiB.
func procStatusKiB(_ status: String, field: String) -> Int? {
    for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
        return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
    }
    return nil
}

/// The Rss (KiB) of the anonymous mapping of exactly `sizeKiB` in a /proc/PID/smaps text: guest RAM.
func guestMappingRssKiB(smaps: String, sizeKiB: Int) -> Int? {
    var anonymous = false, size = 0
    for line in smaps.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let first = fields.first else { continue }
        if first.contains("-"), first.allSatisfy({ $0.isHexDigit || $0 == "-" }) {
            anonymous = fields.count == 5  // address perms offset dev inode, no path
            size = 0
        } else if first == "Size:" {
            size = fields.count > 1 ? Int(fields[1]) ?? 0 : 0
        } else if first == "Rss:", anonymous, size == sizeKiB {
            return fields.count > 1 ? Int(fields[1]) : nil
        }
    }
    return nil
}

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
