import CKvm
import Glibc

/// The kinds of thread `actor-vmm` runs, each with its own allow-list (docs/security.md).
///
/// The process filter (``vmm``'s list merged with every other list) is installed on the main thread before
/// any other thread exists, so every thread starts under it; threads of the narrower kinds then add their own
/// filter as they start, and the kernel allows a call only if every filter on the thread does.
///
/// To extend a list: add the call (or the ioctl request) to the kind whose threads make it, with a comment
/// saying what makes it; the process filter follows by itself. `strace -f` on the failing run, or the
/// `--seccomp` trap message, names the call.
enum ThreadKind: String, CaseIterable, Sendable {
    /// main, `vmm-main`, `vmm-control` and the Swift runtime's own threads: the process filter.
    case vmm
    /// `vcpu0` … : `KVM_RUN`, and the device handlers an exit runs on the vCPU thread (inline-if-idle).
    case vcpu
    /// `vmm-devices` and the per-device loops (`vmm-disk0`, …): virtio I/O, doorbells, interrupts.
    case device
    /// `vmm-api`: the REST API's connections.
    case api
}

/// The allow-lists, one per thread kind. `pid` is the process's own id: signals may only go to its threads.
enum SeccompRules {
    static func rules(for kind: ThreadKind, pid: Int32) -> [SyscallRule] {
        switch kind {
        // vCPU rules first: the merged ioctl rule then tests KVM_RUN before any other request.
        case .vmm: merged([vcpu(pid: pid), device(pid: pid), api(pid: pid), vmm(pid: pid)])
        case .vcpu: vcpu(pid: pid)
        case .device: device(pid: pid)
        case .api: api(pid: pid)
        }
    }

    // MARK: - vCPU threads

    /// `KVM_RUN` first: it is the call a vCPU makes most, and a conditional rule is tested in list order.
    static func vcpu(pid: Int32) -> [SyscallRule] {
        [.allow(SYS_ioctl, arg: 1, in: [
            CKVM_RUN,
            // Device handlers run inline on the vCPU thread: MSI-X routes, and a device's interrupt and
            // doorbell descriptors released there; virtio-net's DRIVER_OK and reset set the TAP's offloads
            // and attach or detach its queues.
            CKVM_SET_GSI_ROUTING, CKVM_IRQFD, CKVM_IOEVENTFD, CKVM_TUNSETOFFLOAD, CKVM_TUNSETQUEUE,
            // Where a vCPU stopped (-v) and compatibility mode's instruction emulator (docs/compat.md).
            CKVM_GET_REGS, CKVM_SET_REGS, CKVM_GET_SREGS, CKVM_SET_SREGS, CKVM_GET_MP_STATE, CKVM_TRANSLATE,
            CKVM_GET_VCPU_EVENTS, CKVM_SET_VCPU_EVENTS, CKVM_GET_XSAVE, CKVM_SET_XSAVE,
         ], also: terminalRestore)]
            + deviceIO + runtime(pid: pid)
    }

    // MARK: - Device loops

    static func device(pid: Int32) -> [SyscallRule] {
        [.allow(SYS_epoll_wait), .allow(SYS_epoll_pwait),
         // virtio-net's control queue (GUEST_OFFLOADS_SET, MQ_VQ_PAIRS_SET): the TAP's offloads and queues.
         .allow(SYS_ioctl, arg: 1, in: [CKVM_SET_GSI_ROUTING, CKVM_IRQFD, CKVM_IOEVENTFD, CKVM_TUNSETOFFLOAD,
                                        CKVM_TUNSETQUEUE], also: terminalRestore)]
            + deviceIO + runtime(pid: pid)
    }

    /// What a device does on a loop or inline on a vCPU thread: virtio-blk (`pread`/`pwrite`, FLUSH, DISCARD
    /// and WRITE_ZEROES), net (TAP `readv`/`writev`), console and rng (read/write), doorbell and interrupt
    /// eventfds (read/write), fd watches (`epoll_ctl`).
    static let deviceIO: [SyscallRule] = [
        .allow(SYS_read), .allow(SYS_readv), .allow(SYS_writev),
        .allow(SYS_pread64), .allow(SYS_pwrite64), .allow(SYS_preadv), .allow(SYS_pwritev),
        // virtio-blk's single requests with RWF_NOWAIT (BlockAlone.swift).
        .allow(SYS_preadv2), .allow(SYS_pwritev2),
        .allow(SYS_fdatasync), .allow(SYS_fsync),
        // virtio-blk's io_uring: submitting and waiting only. The ring is set up (and locked to its image
        // and to READV/WRITEV/FSYNC) by the VMM's own threads when the device is built: see ``vmm``.
        .allow(SYS_io_uring_enter),
        // DISCARD: punch a hole; WRITE_ZEROES: zero a range (both keep the size).
        .allow(SYS_fallocate, arg: 1, in: [UInt(CKVM_FALLOC_PUNCH_HOLE | CKVM_FALLOC_KEEP_SIZE),
                                           UInt(CKVM_FALLOC_ZERO_RANGE | CKVM_FALLOC_KEEP_SIZE)]),
        .allow(SYS_epoll_ctl),
    ]

    // MARK: - The API thread

    static func api(pid: Int32) -> [SyscallRule] {
        [.allow(SYS_epoll_wait), .allow(SYS_epoll_pwait), .allow(SYS_epoll_ctl),
         .allow(SYS_accept), .allow(SYS_accept4), .allow(SYS_read), .allow(SYS_recvfrom), .allow(SYS_sendto),
         // New connections: close-on-exec and non-blocking.
         .allow(SYS_fcntl, arg: 1, in: [UInt(F_GETFD), UInt(F_SETFD), UInt(F_GETFL), UInt(F_SETFL)]),
         // Stopping: the socket file is removed if it is still the one the VMM created.
         .allow(SYS_newfstatat), .allow(SYS_fstat), .allow(SYS_unlink),
         .allow(SYS_ioctl, allOf: terminalRestore[0])]
            + runtime(pid: pid)
    }

    // MARK: - The VMM's own threads (the process filter adds every list above)

    static func vmm(pid: Int32) -> [SyscallRule] {
        [.allow(SYS_ioctl, arg: 1, in: [
            // /dev/kvm, the VM, its vCPUs (Kvm, Vm, Vcpu, CpuSetup) and their statistics.
            CKVM_GET_API_VERSION, CKVM_CREATE_VM, CKVM_CHECK_EXTENSION, CKVM_GET_VCPU_MMAP_SIZE,
            CKVM_GET_SUPPORTED_CPUID, CKVM_CREATE_VCPU, CKVM_SET_USER_MEMORY_REGION, CKVM_SET_TSS_ADDR,
            CKVM_SET_IDENTITY_MAP_ADDR, CKVM_CREATE_IRQCHIP, CKVM_CREATE_PIT2, CKVM_SET_CPUID2, CKVM_SET_MSRS,
            CKVM_GET_FPU, CKVM_SET_FPU, CKVM_GET_LAPIC, CKVM_SET_LAPIC, CKVM_SET_MP_STATE, CKVM_GET_DEVICE_ATTR,
            CKVM_GET_STATS_FD,
            // The terminal (raw mode for tty, isatty), a new pty (--console pty).
            CKVM_TCGETS, CKVM_TCSETS, CKVM_TCSETSW, CKVM_TCSETSF, CKVM_TIOCGWINSZ, CKVM_TIOCGPTN, CKVM_TIOCSPTLCK,
            // TAP devices (--net tap=) and their IPv4 set-up, on a socket(AF_INET, SOCK_DGRAM).
            CKVM_TUNSETIFF, CKVM_TUNGETIFF, CKVM_TUNSETVNETHDRSZ, CKVM_TUNSETOFFLOAD, CKVM_TUNSETQUEUE,
            CKVM_SIOCGIFFLAGS, CKVM_SIOCSIFFLAGS, CKVM_SIOCSIFADDR, CKVM_SIOCSIFNETMASK,
            // Snapshot, restore and migration (docs/snapshot.md), on vmm-main and vmm-control.
            CKVM_GET_MSR_INDEX_LIST, CKVM_GET_MSRS, CKVM_GET_XCRS, CKVM_SET_XCRS, CKVM_GET_DEBUGREGS, CKVM_SET_DEBUGREGS,
            CKVM_GET_TSC_KHZ, CKVM_SET_TSC_KHZ, CKVM_GET_IRQCHIP, CKVM_SET_IRQCHIP, CKVM_GET_CLOCK, CKVM_SET_CLOCK,
            CKVM_GET_PIT2, CKVM_SET_PIT2, CKVM_GET_DIRTY_LOG, CKVM_GET_XSAVE2,
         ])]
        + [
            // Files: kernels, initramfs, disks, rng source, serial/console/log files, /dev/kvm, /dev/net/tun.
            .allow(SYS_openat), .allow(SYS_newfstatat), .allow(SYS_fstat), .allow(SYS_statx), .allow(SYS_lseek),
            .allow(SYS_fcntl), .allow(SYS_unlink), .allow(SYS_sysinfo),
            // A snapshot directory: its files are written whole, then renamed into place.
            .allow(SYS_mkdir), .allow(SYS_mkdirat), .allow(SYS_rename), .allow(SYS_renameat), .allow(SYS_renameat2),
            .allow(SYS_ftruncate),
            // The API socket (a stale socket file is probed with connect) and TAP addresses.
            .allow(SYS_socket, arg: 0, in: [UInt(AF_UNIX), UInt(AF_INET)]),
            .allow(SYS_bind), .allow(SYS_listen), .allow(SYS_connect), .allow(SYS_getsockopt),
            // virtio-blk's io_uring, set up with the device: the ring, then its image (fixed file), completion
            // eventfd and restrictions, then enabled (Sources/CKvm/uring.c). No other registration.
            .allow(SYS_io_uring_setup),
            .allow(SYS_io_uring_register, arg: 1, in: [2, 4, 11, 12]),  // FILES, EVENTFD, RESTRICTIONS, ENABLE_RINGS
            .allow(SYS_setsockopt, arg: 2, in: [UInt(SO_REUSEADDR)]), .allow(SYS_poll),  // a migration's listener
            // Event loops (epoll, eventfd) and libdispatch's (timerfd).
            .allow(SYS_epoll_create1), .allow(SYS_eventfd2), .allow(SYS_timerfd_create), .allow(SYS_timerfd_settime),
            // Threads: loops, vCPUs, the Swift runtime's workers; naming, pinning, priorities, stacking the
            // narrower filters; the vCPU kick signal.
            .allow(SYS_clone3), .allow(SYS_clone), .allow(SYS_set_robust_list), .allow(SYS_rseq),
            // PR_SET_VMA (0x53564d41, newer than these headers): naming guest RAM (GuestMemory.mark).
            .allow(SYS_prctl, arg: 0, in: [UInt(PR_SET_NAME), UInt(PR_GET_NAME), UInt(PR_SET_NO_NEW_PRIVS), 0x5356_4D41]),
            .allow(SYS_seccomp, arg: 0, in: [UInt(SECCOMP_SET_MODE_FILTER)]),
            .allow(SYS_sched_getaffinity), .allow(SYS_sched_setaffinity), .allow(SYS_setpriority),
            .allow(SYS_rt_sigaction), .allow(SYS_sigaltstack),
            // libdispatch parks the main thread in sigsuspend once the main task has suspended.
            .allow(SYS_rt_sigsuspend),
            .allow(SYS_tgkill, arg: 0, in: [UInt(UInt32(bitPattern: pid))]),
        ]
    }

    // MARK: - Every thread

    /// What the Swift runtime, glibc and `Log` need on any thread: memory, locks and parking, signal
    /// returns, time, logging, thread exit; closing a descriptor (an object's deinit may run anywhere);
    /// the SIGSYS report (`prctl(PR_GET_NAME)`) and a thread ending the process with a fatal signal to itself;
    /// `alarm` from the stop-signal handler (any thread may take the signal: SignalWatcher.swift);
    /// `restart_syscall`, which the kernel makes a thread call when a signal interrupted its sleep
    /// (`nanosleep`, `clock_nanosleep`, `poll` with a timeout) and the handler returned — seen on `vmm-main`,
    /// interrupted in the output flush's sleep at exit, in the nested tier.
    static func runtime(pid: Int32) -> [SyscallRule] {
        [
            .allow(SYS_futex), .allow(SYS_write), .allow(SYS_close), .allow(SYS_restart_syscall),
            .allow(SYS_mmap), .allow(SYS_munmap), .allow(SYS_mprotect), .allow(SYS_madvise), .allow(SYS_brk),
            .allow(SYS_mremap), .allow(SYS_sched_yield), .allow(SYS_rt_sigprocmask), .allow(SYS_rt_sigreturn),
            .allow(SYS_clock_gettime), .allow(SYS_clock_nanosleep), .allow(SYS_nanosleep), .allow(SYS_gettimeofday),
            .allow(SYS_getpid), .allow(SYS_gettid), .allow(SYS_getrandom), .allow(SYS_exit), .allow(SYS_exit_group),
            .allow(SYS_alarm), .allow(SYS_prctl, arg: 0, in: [UInt(PR_GET_NAME)]),
            SyscallRule(number: SYS_tgkill, alternatives: [SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGSYS].map {
                [ArgEquals(0, UInt32(bitPattern: pid)), ArgEquals(2, UInt32($0))]
            }),
        ]
    }

    /// `tcsetattr(0, TCSANOW, …)`: the terminal restored by the SIGSYS report and the fatal-signal handlers.
    static let terminalRestore: [[ArgEquals]] = [[ArgEquals(0, 0), ArgEquals(1, UInt32(CKVM_TCSETS))]]

    /// One rule per call: the union of every list's rules for it, in order of first appearance.
    static func merged(_ lists: [[SyscallRule]]) -> [SyscallRule] {
        var result: [SyscallRule] = []
        var position: [Int32: Int] = [:]
        for rule in lists.joined() {
            if let index = position[rule.number] {
                result[index] = result[index].union(rule)
            } else {
                position[rule.number] = result.count
                result.append(rule)
            }
        }
        return result
    }
}

extension SyscallRule {
    /// An ioctl-style rule: argument `index` in `values`, or any of the `also` alternatives.
    static func allow(_ number: Int32, arg index: Int, in values: [UInt], also: [[ArgEquals]]) -> Self {
        let base = allow(number, arg: index, in: values)
        return Self(number: base.number, alternatives: base.alternatives + also)
    }
}
