@testable import Cli
import Testing

@Suite struct OptionsTests {
    @Test func parsesCloudHypervisorSyntax() throws {
        let o = try VmmOptions.parse([
            "--kernel", "k.elf", "--cmdline", "console=ttyS0 tests=a,b", "--cpus", "boot=2,max=4",
            "--memory", "size=1G", "--serial", "file=/tmp/s.log", "--console", "off", "-vv",
        ])
        #expect(o.kernel == "k.elf")
        #expect(o.cmdline == "console=ttyS0 tests=a,b")
        #expect(o.bootVcpus == 2 && o.maxVcpus == 4)
        #expect(o.memorySize == 1 << 30)
        #expect(o.serial == .file("/tmp/s.log"))
        #expect(o.console == .off)
        #expect(o.verbosity == 2)
    }

    @Test func acceptsEqualsForm() throws {
        let o = try VmmOptions.parse(["--kernel=k", "--memory=size=64M", "--serial=null"])
        #expect(o.memorySize == 64 << 20)
        #expect(o.serial == .null)
    }

    @Test func defaults() throws {
        let o = try VmmOptions.parse(["--kernel", "k"])
        #expect(o.bootVcpus == 1 && o.maxVcpus == 1)
        #expect(o.memorySize == 512 << 20)
        #expect(o.serial == .tty && o.console == .off)
        #expect(o.handoff == .inlineIfIdle && o.testDevice)
    }

    @Test func sizes() {
        #expect(parseByteSize("512M") == 512 << 20)
        #expect(parseByteSize("1G") == 1 << 30)
        #expect(parseByteSize("4096") == 4096)
        #expect(parseByteSize("64k") == 64 << 10)
        #expect(parseByteSize("") == nil)
        #expect(parseByteSize("M") == nil)
        #expect(parseByteSize("12X") == nil)
        #expect(parseByteSize("-1M") == nil)
        #expect(parseByteSize("99999999999999999999G") == nil)
        #expect(parseByteSize("17179869184G") == nil, "overflows 64 bits")
    }

    /// Every bad input is one error naming the option and what was expected.
    @Test(arguments: [
        (["--kernel", "k", "--memory", "size=0"], "--memory size=0: must be at least 4M"),
        (["--kernel", "k", "--memory", "size=12Q"], "--memory size=12Q: expected a size such as 512M or 1G"),
        (["--kernel", "k", "--memory", "size=5000"], "--memory size=5000: must be at least 4M"),
        (["--kernel", "k", "--memory", "size=4097K"], "--memory size=4097K: must be a multiple of 4K"),
        (["--kernel", "k", "--memory", "bytes=1G"], "--memory: unknown key 'bytes' (expected one of: size)"),
        (["--kernel", "k", "--memory", "1G"], "--memory 1G: '1G' is not key=value"),
        (["--kernel", "k", "--cpus", "boot=0"], "--cpus boot=0: expected an integer from 1 to 254"),
        (["--kernel", "k", "--cpus", "boot=300"], "--cpus boot=300: expected an integer from 1 to 254"),
        (["--kernel", "k", "--cpus", "boot=4,max=2"], "--cpus boot=4,max=2: max (2) must be at least boot (4)"),
        (["--kernel", "k", "--cpus", "boot=x"], "--cpus boot=x: expected an integer from 1 to 254"),
        (["--kernel", "k", "--serial", "pty"], "--serial pty: expected off, null, tty or file=PATH"),
        (["--kernel", "k", "--frobnicate"], "unknown option '--frobnicate' (see --help)"),
        (["--kernel"], "--kernel: missing value"),
        (["--cmdline", "x"], "--kernel: missing (a payload or --api-socket is required; see --help)"),
        (["--kernel", "a", "--kernel", "b"], "--kernel: given more than once"),
        (["--kernel", "k", "--handoff", "fast"], "--handoff fast: expected inline, enqueue or task"),
        (["--kernel", "k", "--memory", "size=1G,size=2G"], "--memory: key 'size' given twice"),
    ])
    func rejectsBadInput(arguments: [String], message: String) {
        #expect(throws: CliError(message)) { try VmmOptions.parse(arguments) }
    }

    @Test func helpAndVersionNeedNoKernel() throws {
        #expect(try VmmOptions.parse(["--help"]).showHelp)
        #expect(try VmmOptions.parse(["--version"]).showVersion)
    }
}
