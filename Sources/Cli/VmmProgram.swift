import ActorVmm
import Boot
import Devices
import EpollLoop
import Glibc

// The `actor-vmm` program (its executable target, Main/Vmm/main.swift, only calls ``VmmProgram/run(_:)``):
// parse the command line, check every input, then run the VM given on the command line and/or serve the API
// until the VMM is told to exit. (`actor-vmm-remote`, the API client, is Remote/RemoteCommand.swift.)
// A guest reset reboots the VM (a new machine from the same config), as Cloud Hypervisor does.
// Exit codes: 0 the guest powered off, a stop signal, or vmm.shutdown; 1 VMM or guest fault;
// 2 bad command line or configuration.

private func fail(_ message: String, code: Int32) -> Never {
    FileOutput.flushAll(timeout: 2)
    Terminal.restore()
    printError(message)
    exit(code)
}

/// Stops the API server (if any) and waits for it: from here on, no request is served.
private func stop(_ server: HttpServer?) {
    guard let server else { return }
    blockingWait(on: server.loop) { await server.stop() }
}

/// The `actor-vmm` program.
public enum VmmProgram {
    /// Runs the VMM with `arguments` (without the program name) and exits the process.
    public static func run(_ arguments: [String]) -> Never {
        signal(SIGPIPE, SIG_IGN)  // output to a pipe nobody reads fails with EPIPE instead of killing the VMM

        // Descriptors 0-2 left closed by whoever started us would be taken by the first things we open (an epoll
        // instance, a disk image), and terminal input and serial output would then read and write those. Park
        // /dev/null on them first.
        for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) < 0 {
            let null = open("/dev/null", O_RDWR)
            if null >= 0 && null != fd {
                dup2(null, fd)
                close(null)
            }
        }
        SignalWatcher.unblockHandledSignals()

        let options: VmmOptions
        do {
            options = try VmmOptions.parse(arguments)
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

        // The process's seccomp filter goes on before any other thread exists, so every thread starts under it
        // (docs/security.md); vCPU, device and API threads add their own as they start.
        do {
            try Seccomp.start(options.seccomp)
        } catch {
            fail("--seccomp \(options.seccomp.rawValue): cannot install the seccomp filter: \(error) (--seccomp false runs without)", code: 1)
        }

        // The VMM's own loop runs the lifecycle controller and turns stop signals into a clean stop.
        let exitLatch = StopLatch()
        let mainLoop: EventLoop
        let controller: VmmController
        let signals: SignalWatcher
        do {
            mainLoop = try EventLoop(name: "vmm-main")
            let vmm = VmmController(loop: mainLoop, backend: KvmBackend(), exitLatch: exitLatch)
            controller = vmm
            signals = try SignalWatcher(loop: mainLoop, stopLatch: StopLatch { reason in
                Task(executorPreference: vmm.loop) { await vmm.terminate(reason) }
            })
        } catch {
            fail("cannot start the VMM: \(error)", code: 1)
        }

        // The API socket is bound before any VM exists (a socket that cannot be served is a bad command line), but
        // served only once a command-line VM is up: early clients wait in the listen backlog instead of seeing it
        // half-booted.
        var apiServer: HttpServer?
        if let apiSocket = options.apiSocket {
            let listener: UnixSocket.Listener
            do {
                listener = try apiSocket.listen()
            } catch {
                fail(error.description, code: 2)
            }
            do {
                let loop = try EventLoop(name: "vmm-api", onStart: Seccomp.threadStart(.api))
                let router = ApiRouter(controller: controller, exitLatch: exitLatch)
                apiServer = HttpServer(loop: loop, listener: listener) { request in await router.handle(request) }
            } catch {
                UnixSocket.close(listener)
                fail("cannot start the API server: \(error)", code: 1)
            }
        }

        // A VM on the command line: every input it names is checked against the host first (exit code 2), then it
        // is created and booted through the same lifecycle as the API's (a failure there is exit code 1).
        if options.hasVm {
            let config = options.vm
            let prepared: PreparedPayload
            do {
                prepared = try Payload.prepare(config)
            } catch {
                stop(apiServer)
                fail(error.cli, code: 2)
            }
            Log.info("kernel \(config.payload.kernel) loaded (\(prepared.boot.bootProtocol.rawValue)), entry \(hex(prepared.boot.bootState.rip)), \(config.memorySize >> 20) MiB, \(config.bootVcpus) vCPU(s)")
            if let initramfs = prepared.boot.initramfs {
                Log.info("initramfs at \(hex(initramfs.address)), \(initramfs.size) bytes")
            }
            let failure = blockingWait(on: mainLoop) { () async -> VmmError? in
                do throws(VmmError) {
                    try await controller.create(config, prepared: prepared)
                    try await controller.boot()
                    return nil
                } catch {
                    return error
                }
            }
            if let error = failure, exitLatch.stopReason == nil {  // (else a signal came first: exit as it says, below)
                stop(apiServer)
                fail(error.messages.dropFirst().joined(separator: ": "), code: error.isConfigError ? 2 : 1)
            }
        }

        if let apiServer, exitLatch.stopReason == nil {
            let failure = blockingWait(on: mainLoop) { () async -> Errno? in
                do throws(Errno) { try await apiServer.start(); return nil } catch { return error }
            }
            if let failure {
                stop(apiServer)
                fail("cannot start the API server: \(failure)", code: 1)
            }
            Log.info("API listening on \(apiServer.listener.path ?? "fd=\(apiServer.listener.fd)")")
        }

        // Until the guest stops the VM, vmm.shutdown is answered, or a signal arrives; the VM is torn down by then.
        // The API server stops (closing every connection and removing its socket file); its loop and `vmm-main` are
        // left to `exit`: a request still in flight (say, queued behind vmm.shutdown) may yet resume on them, and
        // a loop that has shut down traps on new work.
        let reason = exitLatch.wait()
        stop(apiServer)
        signals.stop()
        FileOutput.flushAll(timeout: 2)  // guest output still buffered for a slow reader (Outputs.swift)
        Terminal.restore()
        if reason.exitCode == 0 {
            Log.info(reason.description)
        } else {
            printError(reason.description)
        }
        exit(reason.exitCode)
    }
}
