// The host: its description for the report, files, directories, the clock, and child processes.
import Glibc

/// What the run was measured on.
struct MachineInfo: Sendable {
    var cpuModel: String
    var cpuCount: Int
    var kernel: String
    var kvmModules: [String]
    var hypervisorFlag: Bool

    static func current() -> MachineInfo {
        let cpuinfo = readTextFile("/proc/cpuinfo") ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { String($0.drop { $0 == " " || $0 == "\t" }) } ?? "unknown"
        var name = utsname()
        uname(&name)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        let kernel = "\(field(name.sysname)) \(field(name.release)) \(field(name.machine))"
        let modules = ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"].filter { access("/sys/module/\($0)", F_OK) == 0 }
        let flags = cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") } ?? ""
        return MachineInfo(cpuModel: model, cpuCount: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), kernel: kernel,
                           kvmModules: modules, hypervisorFlag: flags.split(separator: " ").contains("hypervisor"))
    }

    var kvmDescription: String {
        let modules = kvmModules.isEmpty ? "no kvm module" : kvmModules.joined(separator: "+")
        let nested = kvmModules.contains("kvm_pvm") ? ", nested PVM (no VMX/SVM in this guest)" : ""
        return "/dev/kvm: \(modules)\(nested)"
    }

    var oneLine: String {
        "\(cpuModel), \(cpuCount) CPUs, \(kernel)\(hypervisorFlag ? " (a VM)" : ""), \(kvmDescription)"
    }
}

/// The whole text of a (small) file, or nil.
func readTextFile(_ path: String) -> String? {
    readFileBytes(path).map { String(decoding: $0, as: UTF8.self) }
}

/// The whole contents of a (small) file, or nil.
func readFileBytes(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { readRetrying(fd, $0.baseAddress!, $0.count) }
        if n < 0 { return nil }
        if n == 0 { break }
        bytes += chunk[0..<n]
    }
    return bytes
}

/// Writes `text` to `path` (created or truncated).
func writeTextFile(_ path: String, _ text: String) throws(BenchError) {
    try writeFile(path, bytes: Array(text.utf8))
}

/// Writes `bytes` to `path` (created or truncated).
func writeFile(_ path: String, bytes: [UInt8]) throws(BenchError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw BenchError("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw BenchError("cannot write \(path): \(String(cString: strerror(errno)))") }
        offset += n
    }
}

/// Creates `path` and its parents, like `mkdir -p`.
func makeDirectories(_ path: String) throws(BenchError) {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw BenchError("cannot create \(current): \(String(cString: strerror(errno)))")
        }
    }
}

/// The current UTC time as `2025-01-31T12:34:56Z` and as `20250131-123456` (for file names).
func utcTimestamps() -> (iso: String, compact: String) {
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    let date = "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))"
    let clock = "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    let compact = "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))-"
        + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))"
    return ("\(date)T\(clock)Z", compact)
}

/// Runs `arguments` (a program, looked up in PATH, and its arguments) and returns its exit status and its
/// standard output; standard error is passed through (build progress stays visible).
func runProcess(_ arguments: [String]) -> (status: Int32, stdout: String) {
    var output: [Int32] = [0, 0]
    guard makePipe(&output) else { return (-1, "") }
    defer { close(output[0]) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, output[1], 1)
    let argv = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ)
    close(output[1])
    guard spawned == 0 else { return (-1, "") }
    let stdout = readAll(output[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F), stdout)
}

/// The package root: two levels above this source file (Benchmarks/Host.swift), if it still exists;
/// else the current directory.
func packageRoot() -> String {
    let file = #filePath
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(2)
    let root = parts.joined(separator: "/")
    return access(root + "/Package.swift", F_OK) == 0 ? root : "."
}

/// `pipe` with both ends close-on-exec (pipe2 needs _GNU_SOURCE, which Glibc's Swift module lacks).
func makePipe(_ fds: inout [Int32]) -> Bool {
    guard pipe(&fds) == 0 else { return false }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return true
}
