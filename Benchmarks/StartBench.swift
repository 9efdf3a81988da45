// Row 5: VMM start and memory overhead of the real `actor-vmm` release binary (a static executable),
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
//   RssFile) and /proc/PID/smaps (Rss of the guest-RAM mappings, which actor-vmm marks MADV_DONTFORK
//   and, where the kernel can, names `[anon:actor-vmm-guest-ram]`) are read. Overhead = VmRSS − guest RAM Rss: what the VMM costs beyond the guest
//   pages touched.
// - Floor, in the same run, alternating with actor-vmm: a Swift hello world linked as actor-vmm (`HelloFloor`),
//   timed to its first output byte and stopped there for its VmRSS.
import EpollLoop
import Glibc

struct StartSample: Sendable {
    var wallMilliseconds: Double
    var cpuMilliseconds: Double
    var atStart: MemorySnapshot
    var steady: MemorySnapshot
}

/// The floor, measured the same way: a Swift hello world linked as actor-vmm (see `HelloFloor`).
struct FloorSample: Sendable {
    var wallMilliseconds: Double
    var cpuMilliseconds: Double
    var memory: MemorySnapshot
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

struct StartResults: Sendable {
    var vmm: [StartSample] = []
    var floor: [FloorSample] = []
    var floorError: BenchError?
    /// CPU milliseconds of KVM's own part of a start (``KvmStartFloor``), one per run.
    var kvmFloor: [Double] = []
}

struct StartBench {
    let vmmPath: String
    let helloPath: String?
    let runs: Int
    let directory: String
    static let memoryMiB = 128

    /// Alternates floor and actor-vmm processes, `runs` of each.
    func run(progress: (String) -> Void) -> Result<StartResults, BenchError> {
        let guestPath = directory + "/start-guest-\(getpid()).elf"
        do { try StartGuest.write(to: guestPath) } catch { return .failure(error) }
        defer { unlink(guestPath) }
        var results = StartResults()
        for index in 0..<runs {
            if let helloPath, results.floorError == nil {
                do { results.floor.append(try runFloor(helloPath)) } catch {
                    results.floorError = error as? BenchError ?? BenchError("\(error)")
                }
            }
            if let kvm = try? KvmStartFloor.measure(guestPath: guestPath, mebibytes: Self.memoryMiB) {
                results.kvmFloor.append(kvm)
            }
            do {
                let sample = try runVmm(guestPath: guestPath)
                results.vmm.append(sample)
                progress("start run \(index + 1)/\(runs): \(fixed(sample.wallMilliseconds, 2)) ms wall, "
                         + "\(fixed(sample.cpuMilliseconds, 2)) CPU ms, overhead "
                         + "\(fixed(Double(sample.steady.overhead) / 1024, 2)) MiB")
            } catch {
                return .failure(error as? BenchError ?? BenchError("\(error)"))
            }
        }
        return .success(results)
    }

    func runVmm(guestPath: String) throws -> StartSample {
        let child = try Child(arguments: [vmmPath, "--kernel", guestPath, "--memory", "size=\(Self.memoryMiB)M",
                                          "--cpus", "boot=1", "--serial", "tty", "--console", "off"])
        defer { child.reap() }
        let (wall, cpu) = try child.waitForFirstByte()  // the guest's third instruction
        let atStart = try child.snapshot(guestRam: true)
        // Steady state: after 10,000 round trips through the actor hand-off ('M').
        var steady: MemorySnapshot?
        while child.readMore() {
            if steady == nil, child.output.contains(UInt8(ascii: "M")) {
                steady = try child.snapshot(guestRam: true)
            }
        }
        let status = child.reap(kill: false)  // stdout is closed: it has exited, or is about to
        let stdout = String(decoding: child.output, as: UTF8.self)
        guard status == 0, stdout == "SM\n" else {
            throw BenchError("actor-vmm exited with status \(status): \(readAll(child.errorFD)) \(stdout.suffix(200))")
        }
        guard let steady else { throw BenchError("the guest never wrote 'M'") }
        return StartSample(wallMilliseconds: wall, cpuMilliseconds: cpu, atStart: atStart, steady: steady)
    }

    func runFloor(_ helloPath: String) throws -> FloorSample {
        let child = try Child(arguments: [helloPath])
        defer { child.reap() }
        let (wall, cpu) = try child.waitForFirstByte()
        while !child.output.contains(UInt8(ascii: "\n")) && child.readMore() {}
        let memory = try child.snapshot(guestRam: false)  // it waits in pause() until killed
        return FloorSample(wallMilliseconds: wall, cpuMilliseconds: cpu, memory: memory)
    }
}

/// A child process with stdout and stderr on pipes, stdin on /dev/null.
final class Child {
    let pid: pid_t
    let outputFD: Int32
    let errorFD: Int32
    let spawnTime: UInt64
    private(set) var output: [UInt8] = []
    private var reaped = false
    private var status: Int32 = -1

    init(arguments: [String]) throws(BenchError) {
        var out: [Int32] = [0, 0], err: [Int32] = [0, 0]
        guard makePipe(&out), makePipe(&err) else { throw BenchError("pipe: \(Errno.current)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        spawnTime = monotonicNanoseconds()
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
        close(out[1]); close(err[1])
        guard spawned == 0 else {
            close(out[0]); close(err[0])
            throw BenchError("cannot start \(arguments[0]): \(Errno(rawValue: spawned))")
        }
        self.pid = pid
        outputFD = out[0]
        errorFD = err[0]
    }

    deinit {
        reap()
        close(outputFD)
        close(errorFD)
    }

    /// Blocks until the first byte of stdout; returns the wall time since the spawn and the child's CPU
    /// time (all threads) at that moment, both in milliseconds.
    func waitForFirstByte() throws(BenchError) -> (wall: Double, cpu: Double) {
        var cpuClock = clockid_t()
        let haveClock = clock_getcpuclockid(pid, &cpuClock) == 0
        var byte: UInt8 = 0
        guard readRetrying(outputFD, &byte, 1) == 1 else {
            let status = reap(kill: false)
            throw BenchError("\(status == 0 ? "no output" : "exit status \(status)"): \(readAll(errorFD))")
        }
        let now = monotonicNanoseconds()
        var cpu = timespec()
        let cpuNanoseconds = haveClock && clock_gettime(cpuClock, &cpu) == 0
            ? Double(cpu.tv_sec) * 1e9 + Double(cpu.tv_nsec) : .nan
        output.append(byte)
        return (Double(now - spawnTime) / 1e6, cpuNanoseconds / 1e6)
    }

    /// Reads what stdout has next; false at end of file.
    func readMore() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let count = chunk.withUnsafeMutableBytes { readRetrying(outputFD, $0.baseAddress!, $0.count) }
        guard count > 0 else { return false }
        output += chunk[0..<count]
        return true
    }

    /// Stops the child, reads its memory figures (and, if `guestRam`, the Rss of its guest-RAM mappings),
    /// lets it continue.
    func snapshot(guestRam: Bool) throws(BenchError) -> MemorySnapshot {
        kill(pid, SIGSTOP)
        var stopped: Int32 = 0
        while waitpid(pid, &stopped, WUNTRACED) < 0 && errno == EINTR {}
        defer { kill(pid, SIGCONT) }
        guard let status = readTextFile("/proc/\(pid)/status") else { throw BenchError("cannot read /proc/\(pid)/status") }
        guard let rss = procStatusKiB(status, field: "VmRSS"), let anon = procStatusKiB(status, field: "RssAnon"),
              let file = procStatusKiB(status, field: "RssFile") else {
            throw BenchError("no VmRSS/RssAnon/RssFile for \(pid)")
        }
        var guest = 0
        if guestRam {
            guard let smaps = readTextFile("/proc/\(pid)/smaps"), let found = guestMappingRssKiB(smaps: smaps) else {
                throw BenchError("no guest-RAM mapping (named, or anonymous with VmFlags dc) in /proc/\(pid)/smaps")
            }
            guest = found
        }
        return MemorySnapshot(vmRSS: rss, rssAnon: anon, rssFile: file, guestRSS: guest)
    }

    /// Waits for the child and returns its exit status (128 + signal if a signal ended it), killing it
    /// first (SIGKILL) unless `kill` is false. Idempotent.
    @discardableResult
    func reap(kill killFirst: Bool = true) -> Int32 {
        guard !reaped else { return status }
        reaped = true
        if killFirst { kill(pid, SIGKILL) }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        let signal = raw & 0x7F
        status = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
        return status
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

/// The Rss (KiB) of guest RAM in a /proc/PID/smaps text, summed over regions; nil if there is none.
/// `actor-vmm` marks its RAM mappings (`GuestMemory.mark`): named `[anon:NAME]` where the kernel names
/// anonymous mappings, and `MADV_DONTFORK` (`dc` in VmFlags) everywhere. Found by that mark rather than by
/// size: an unmarked mapping is merged by the kernel with neighbouring anonymous ones (a malloc arena).
func guestMappingRssKiB(smaps: String, name: String = "actor-vmm-guest-ram") -> Int? {
    var total: Int?
    var anonymous = false, named = false, rss = 0
    for line in smaps.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let first = fields.first else { continue }
        if first.contains("-"), first.allSatisfy({ $0.isHexDigit || $0 == "-" }) {
            anonymous = fields.count == 5  // address perms offset dev inode, no path
            named = fields.count == 6 && fields[5] == "[anon:\(name)]"
            rss = 0
        } else if first == "Rss:", fields.count > 1 {
            rss = Int(fields[1]) ?? 0
        } else if first == "VmFlags:", named || (anonymous && fields.contains("dc")) {
            total = (total ?? 0) + rss  // VmFlags is a mapping's last line
        }
    }
    return total
}

