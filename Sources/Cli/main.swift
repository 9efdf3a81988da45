import ActorVmm
import Boot
import Devices
import EpollLoop
import Glibc

// actor-vmm: parse the command line, check every input, then build and run the VM.
// Exit codes: 0 the guest powered off (or reset, or a stop signal); 1 VMM or guest fault; 2 bad input.

/// Writes one line to stderr (no stdio buffering: the line is out before the process exits).
func printError(_ message: String) {
    var bytes = Array("actor-vmm: error: \(message)\n".utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

func fail(_ message: String, code: Int32) -> Never {
    Terminal.restore()
    printError(message)
    exit(code)
}

signal(SIGPIPE, SIG_IGN)

let options: VmmOptions
do {
    options = try VmmOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    fail(error.description, code: 2)
}
if options.showHelp { print(usage); exit(0) }
if options.showVersion { print(version); exit(0) }

Log.setLevel(Log.Level(rawValue: min(Log.Level.warning.rawValue + options.verbosity, Log.Level.trace.rawValue)) ?? .trace)
if let logFile = options.logFile {
    let fd = open(logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    guard fd >= 0 else { fail("--log-file \(logFile): cannot open: \(String(cString: strerror(errno)))", code: 2) }
    Log.setSink(fd: fd)
}

// Inputs the user controls are all checked here, before /dev/kvm is opened.
let hostMemory = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) &* UInt64(sysconf(Int32(_SC_PAGESIZE)))
if options.memorySize > hostMemory {
    fail("--memory size=\(options.memorySize >> 20)M: more than the host's \(hostMemory >> 20) MiB of RAM", code: 2)
}
let memory: GuestMemory
do {
    memory = try GuestMemory(layout: Layout.ramRegions(size: options.memorySize))
} catch {
    fail("--memory size=\(options.memorySize >> 20)M: \(error)", code: 2)
}
// Host compatibility mode (docs/compat.md): decided once, before the kernel is loaded, because it adds
// parameters to a Linux guest's command line.
let compat = options.compat.resolve()
if compat.isNeeded {
    Log.info("host compatibility mode on (\(options.compat == .auto ? "detected a host without VMX" : "--compat on")): instruction emulation, no PIT; for Linux kernels the command line gains: \(compat.commandLineAdditions.joined(separator: " "))")
}
let bootSetup: BootSetup
do {
    bootSetup = try KernelLoader.load(
        .init(kernelPath: options.kernel!, initramfsPath: options.initramfs, cmdline: options.cmdline,
              acpi: AcpiConfig(bootVcpus: options.bootVcpus, maxVcpus: options.maxVcpus,
                               com1: options.serial == .off ? nil : .com1),
              linuxParameters: compat.commandLineAdditions),
        memory: memory)
} catch {
    fail(error.description, code: 2)
}
let devices: PreparedDevices
do {
    devices = try PreparedDevices.open(options)
} catch {
    fail(error.description, code: 2)
}
Log.info("kernel \(options.kernel!) loaded (\(bootSetup.bootProtocol.rawValue)), entry \(hex(bootSetup.bootState.rip)), \(options.memorySize >> 20) MiB, \(options.bootVcpus) vCPU(s)")
if let initramfs = bootSetup.initramfs {
    Log.info("initramfs at \(hex(initramfs.address)), \(initramfs.size) bytes")
}

let machine: Machine
do {
    machine = try await Machine.build(options: options, memory: memory, boot: bootSetup, compat: compat, devices: devices)
} catch {
    fail("cannot create the VM: \(error)", code: 1)
}
let reason: VmStopReason
do {
    reason = try await machine.run(serialInput: options.serial == .tty, usesTerminal: devices.usesTerminal)
} catch {
    fail("cannot start the VM: \(error)", code: 1)
}
if reason.exitCode == 0 {
    Log.info(reason.description)
} else {
    printError(reason.description)
}
exit(reason.exitCode)
