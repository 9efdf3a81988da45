// CKvm: the few C declarations Swift cannot import on its own.
//
// ioctl(2) is variadic and the KVM_* request numbers are function-like macros, so each request used by
// ActorVMM is exported as a constant and called through `ckvm_ioctl*`. epoll and eventfd headers are not
// part of Glibc's Swift module map. Everything here is a thin, side-effect-free wrapper.
#ifndef CKVM_H
#define CKVM_H

#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <semaphore.h>
#include <sched.h>
#include <termios.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <sys/syscall.h>
#include <sys/signalfd.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <asm/bootparam.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <sys/prctl.h>

// MARK: ioctl request numbers (macros Swift cannot import)
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long CKVM_TRANSLATE = KVM_TRANSLATE;
static const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long CKVM_GET_XSAVE2 = KVM_GET_XSAVE2;
static const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long CKVM_GET_DEVICE_ATTR = KVM_GET_DEVICE_ATTR;
static const unsigned long CKVM_GET_STATS_FD = KVM_GET_STATS_FD;
// Snapshot, restore and migration (docs/snapshot.md)
static const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
static const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS, CKVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long CKVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS, CKVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
static const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ, CKVM_SET_TSC_KHZ = KVM_SET_TSC_KHZ;
static const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP, CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
static const unsigned long CKVM_GET_CLOCK = KVM_GET_CLOCK, CKVM_SET_CLOCK = KVM_SET_CLOCK;
static const unsigned long CKVM_GET_PIT2 = KVM_GET_PIT2, CKVM_SET_PIT2 = KVM_SET_PIT2;
static const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
static const unsigned int CKVM_MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES;
/// Points a `struct kvm_dirty_log` at `bitmap` (the anonymous union Swift cannot name).
static inline void ckvm_dirty_log_set_bitmap(struct kvm_dirty_log *log, void *bitmap) { log->dirty_bitmap = bitmap; }

static const unsigned int CKVM_IOEVENTFD_FLAG_PIO = KVM_IOEVENTFD_FLAG_PIO;
static const unsigned int CKVM_IOEVENTFD_FLAG_DEASSIGN = KVM_IOEVENTFD_FLAG_DEASSIGN;

// MARK: ioctl request numbers of the host side (terminal, pty, TAP, interface set-up), for seccomp filters
static const unsigned long CKVM_TCGETS = TCGETS, CKVM_TCSETS = TCSETS, CKVM_TCSETSW = TCSETSW, CKVM_TCSETSF = TCSETSF;
static const unsigned long CKVM_TIOCGWINSZ = TIOCGWINSZ, CKVM_TIOCGPTN = TIOCGPTN, CKVM_TIOCSPTLCK = TIOCSPTLCK;
static const unsigned long CKVM_FIONBIO = FIONBIO, CKVM_FIOCLEX = FIOCLEX;
static const unsigned long CKVM_TUNSETIFF = _IOW('T', 202, int), CKVM_TUNSETOFFLOAD = _IOW('T', 208, unsigned int);
static const unsigned long CKVM_TUNSETVNETHDRSZ = _IOW('T', 216, int), CKVM_TUNGETIFF = _IOR('T', 210, unsigned int);
static const unsigned long CKVM_TUNSETQUEUE = _IOW('T', 217, int);
/// TUNSETOFFLOAD flags (<linux/if_tun.h>): what the TAP may hand to user space (checksum left partial, TSO, UFO).
static const unsigned int CKVM_TUN_F_CSUM = 0x01, CKVM_TUN_F_TSO4 = 0x02, CKVM_TUN_F_TSO6 = 0x04;
static const unsigned int CKVM_TUN_F_TSO_ECN = 0x08, CKVM_TUN_F_UFO = 0x10;
static const unsigned long CKVM_SIOCGIFFLAGS = SIOCGIFFLAGS, CKVM_SIOCSIFFLAGS = SIOCSIFFLAGS;
static const unsigned long CKVM_SIOCSIFADDR = SIOCSIFADDR, CKVM_SIOCSIFNETMASK = SIOCSIFNETMASK;

// MARK: seccomp (classic BPF filters; docs/security.md). Implemented in seccomp.c.
static const uint32_t CKVM_SECCOMP_RET_KILL_PROCESS = SECCOMP_RET_KILL_PROCESS, CKVM_SECCOMP_RET_TRAP = SECCOMP_RET_TRAP;
static const uint32_t CKVM_SECCOMP_RET_LOG = SECCOMP_RET_LOG, CKVM_SECCOMP_RET_ALLOW = SECCOMP_RET_ALLOW;
static const uint32_t CKVM_AUDIT_ARCH_X86_64 = AUDIT_ARCH_X86_64;
static const unsigned int CKVM_SECCOMP_FILTER_FLAG_TSYNC = SECCOMP_FILTER_FLAG_TSYNC;
static inline uint32_t ckvm_seccomp_data_nr_offset(void) { return offsetof(struct seccomp_data, nr); }
static inline uint32_t ckvm_seccomp_data_arch_offset(void) { return offsetof(struct seccomp_data, arch); }
static inline uint32_t ckvm_seccomp_data_args_offset(void) { return offsetof(struct seccomp_data, args); }
/// Sets no_new_privs and installs `count` instructions as a seccomp filter on the calling thread (`flags`:
/// SECCOMP_FILTER_FLAG_TSYNC puts it on every thread of the process). 0 on success, a negated errno value,
/// or (TSYNC) the positive id of a thread that could not be synchronised.
int ckvm_seccomp_install(const struct sock_filter *instructions, unsigned short count, unsigned int flags);
/// Installs the SIGSYS handler that reports a call a filter traps (thread, number, name) on stderr, calls
/// `before_exit` (which restores the terminal) and ends the process by SIGSYS.
int ckvm_seccomp_install_reporter(void (*before_exit)(void));
/// Makes one system call no filter allows (getppid), for the end-to-end tests of the filters.
long ckvm_seccomp_forbidden_call(void);
/// The system call's name (x86-64), or NULL when the build host's header does not know it.
const char *ckvm_syscall_name(long number);

// MARK: ioctl wrappers
static inline int ckvm_ioctl(int fd, unsigned long request) { return ioctl(fd, request, 0); }
static inline int ckvm_ioctl_arg(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
static inline int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }

// MARK: thread names (pthread_setname_np needs _GNU_SOURCE; defining it here would make this module's view
// of libc differ from Glibc's, so the wrapper lives in shim.c, which the target compiles with _GNU_SOURCE)
int ckvm_set_thread_name(const char *name);

// fallocate(2) (punch hole, zero range) also needs _GNU_SOURCE; implemented in shim.c.
int ckvm_fallocate(int fd, int mode, int64_t offset, int64_t length);
static const int CKVM_FALLOC_KEEP_SIZE = 0x01, CKVM_FALLOC_PUNCH_HOLE = 0x02, CKVM_FALLOC_ZERO_RANGE = 0x10;
static const int CKVM_O_DIRECT = 040000;
// preadv2/pwritev2 with RWF_NOWAIT (also _GNU_SOURCE; shim.c): the transfer if it can be done without
// blocking (page-cache hits), else -1 with EAGAIN (or EOPNOTSUPP where the file system cannot tell).
#include <sys/uio.h>
long ckvm_rw_nowait(int fd, const struct iovec *iov, int count, int64_t offset, int write);
// The CPUs the calling thread may run on (sched_getaffinity; _GNU_SOURCE for CPU_COUNT), or -1.
int ckvm_usable_cpus(void);

// TAP and pty set-up (struct ifreq's unions are awkward from Swift); implemented in shim.c.
/// Opens or creates TAP `name` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 12-byte header, no offloads); returns the fd.
/// `name` may be a template such as "vmtap%d" (the kernel picks the number). `actual_name` receives the
/// interface's name; `*existed` is 1 when it was a persistent TAP that existed before (0: created here,
/// and removed by the kernel when the last descriptor closes).
int ckvm_tap_open(const char *name, char *actual_name, size_t actual_name_size, int *existed);
/// ``ckvm_tap_open`` with IFF_MULTI_QUEUE when `multi_queue` is non-zero: each call with the same name opens
/// one more queue of the interface (the first one creates it).
int ckvm_tap_open_queue(const char *name, int multi_queue, char *actual_name, size_t actual_name_size, int *existed);
/// Attaches (`attach` non-zero) or detaches a queue of a multi-queue TAP (TUNSETQUEUE); 0 or -1 with errno.
int ckvm_tap_set_queue(int fd, int attach);
/// Optionally sets an IPv4 address and netmask (network byte order), then brings the interface up.
int ckvm_if_configure(const char *name, uint32_t address_be, uint32_t netmask_be, int set_address);
/// Opens a new pseudo-terminal master (non-blocking); writes the slave's path.
int ckvm_open_pty(char *path, size_t path_size);
// MARK: CPU affinity (pthread_setaffinity_np and sched_getcpu need _GNU_SOURCE too: implemented in shim.c)
/// Pins the calling thread to CPU `cpu`; 0 on success, else an errno value.
int ckvm_pin_current_thread(int cpu);

// MARK: guest RAM mappings

/// Names an anonymous mapping (`[anon:NAME]` in /proc/PID/maps and smaps; prctl PR_SET_VMA_ANON_NAME, Linux
/// 5.17+ with CONFIG_ANON_VMA_NAME). Returns 0, or -1 with errno (EINVAL where the kernel has no names).
int ckvm_name_mapping(void *address, size_t length, const char *name);
/// The CPU the calling thread is running on, or -1.
int ckvm_current_cpu(void);

// MARK: the time-stamp counter (for the benchmarks' per-exit timestamps; not serialising)
static inline uint64_t ckvm_rdtsc(void) { return __builtin_ia32_rdtsc(); }

// MARK: errno (a thread-local macro)
static inline int ckvm_errno(void) { return errno; }

// MARK: a signal used to kick vCPU threads out of KVM_RUN (SIGRTMIN is a macro calling a function)
static inline int ckvm_sigrtmin(void) { return SIGRTMIN; }

// MARK: acquire/release accesses for memory shared with the guest
static inline uint16_t ckvm_load_acquire_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline void ckvm_store_release_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline void ckvm_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// MARK: immediate_exit is written by another thread while the vCPU may be in KVM_RUN
static inline void ckvm_set_immediate_exit(struct kvm_run *run, uint8_t v) { __atomic_store_n(&run->immediate_exit, v, __ATOMIC_SEQ_CST); }

// MARK: instruction emulation (host compatibility mode)
/// The instruction bytes KVM reports with a KVM_INTERNAL_ERROR_EMULATION exit (the `emulation_failure`
/// overlay, whose anonymous union Swift cannot name): copies up to 15 bytes into `out` and returns how many,
/// or 0 when the exit carries none (older kernels, or the flag is clear).
static inline int ckvm_emulation_failure_bytes(const struct kvm_run *run, uint8_t out[15]) {
    if (run->exit_reason != KVM_EXIT_INTERNAL_ERROR || run->emulation_failure.suberror != KVM_INTERNAL_ERROR_EMULATION) return 0;
    if (run->emulation_failure.ndata < 3) return 0;  /* flags, insn_size + insn_bytes (two 64-bit words) */
    if (!(run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) return 0;
    int size = run->emulation_failure.insn_size;
    if (size > 15) size = 15;
    for (int i = 0; i < size; i++) out[i] = run->emulation_failure.insn_bytes[i];
    return size;
}

/// A 128-bit compare-exchange on host memory `p` (16-byte aligned): `lock cmpxchg16b`, the same atomic
/// read-modify-write the guest's own instruction performs. Returns 1 and stores `desired` if `*p` equals
/// `expected`; otherwise returns 0 and writes the current value to `expected`. Implemented in shim.c.
int ckvm_cmpxchg16b(void *p, uint64_t expected[2], const uint64_t desired[2]);

// MARK: layout helpers for tests (offsetof is a macro)
#define CKVM_OFFSET(type, field) ((size_t)offsetof(type, field))
static inline size_t ckvm_boot_params_cmd_line_ptr_offset(void) { return offsetof(struct boot_params, hdr.cmd_line_ptr); }
static inline size_t ckvm_boot_params_e820_entries_offset(void) { return offsetof(struct boot_params, e820_entries); }
static inline size_t ckvm_boot_params_e820_table_offset(void) { return offsetof(struct boot_params, e820_table); }
static inline size_t ckvm_boot_params_hdr_offset(void) { return offsetof(struct boot_params, hdr); }
static inline size_t ckvm_boot_params_type_of_loader_offset(void) { return offsetof(struct boot_params, hdr.type_of_loader); }
static inline size_t ckvm_boot_params_boot_flag_offset(void) { return offsetof(struct boot_params, hdr.boot_flag); }
static inline size_t ckvm_boot_params_header_offset(void) { return offsetof(struct boot_params, hdr.header); }
static inline size_t ckvm_boot_params_cmdline_size_offset(void) { return offsetof(struct boot_params, hdr.cmdline_size); }
static inline size_t ckvm_boot_params_ext_cmd_line_ptr_offset(void) { return offsetof(struct boot_params, ext_cmd_line_ptr); }
static inline size_t ckvm_boot_params_loadflags_offset(void) { return offsetof(struct boot_params, hdr.loadflags); }
static inline size_t ckvm_boot_params_acpi_rsdp_addr_offset(void) { return offsetof(struct boot_params, acpi_rsdp_addr); }
static inline size_t ckvm_boot_params_size(void) { return sizeof(struct boot_params); }


// MARK: CRC-32 (crc32.c)

/// zlib's CRC-32 of `length` bytes at `buffer`, continuing from `crc` (0 to start).
uint32_t ckvm_crc32(uint32_t crc, const void *buffer, size_t length);

// MARK: io_uring (uring.c): a ring locked to one file (fixed file 0) and READV/WRITEV/FSYNC
#include <sys/uio.h>
/// One ring; the pointers point into its two mappings. Only uring.c touches the fields.
struct ckvm_uring {
    int fd;
    unsigned sq_entries, cq_entries, sq_mask, cq_mask, local_tail;
    unsigned *sq_head, *sq_tail, *sq_array, *cq_head, *cq_tail, *cq_flags;
    void *sqes, *cqes, *ring;
    size_t ring_size, sqes_size;
};
/// Sets up a ring of at least `entries` SQEs on `file_fd` (fixed file 0), completions signalled on
/// `event_fd` (-1: none). 0, or a negated errno value (ENOSYS, EPERM: no io_uring here).
int ckvm_uring_init(struct ckvm_uring *ring, unsigned entries, int file_fd, int event_fd);
/// Unmaps and closes the ring (the kernel waits for or cancels what is in flight).
void ckvm_uring_exit(struct ckvm_uring *ring);
/// Queues a READV (write == 0) or WRITEV of the image at `offset`; -EBUSY when the SQ ring is full.
int ckvm_uring_prep_rw(struct ckvm_uring *ring, int write, const struct iovec *iov, unsigned count, uint64_t offset,
                       uint64_t user_data);
/// Queues an fdatasync that starts only after every SQE queued before it has completed (IOSQE_IO_DRAIN).
int ckvm_uring_prep_fdatasync_after_all(struct ckvm_uring *ring, uint64_t user_data);
/// Submits what is queued and waits for `wait` completions; the number submitted, or a negated errno.
int ckvm_uring_submit(struct ckvm_uring *ring, unsigned wait);
/// Takes one completion: 1 and its user_data and result (bytes or a negated errno), or 0 when none.
int ckvm_uring_peek(struct ckvm_uring *ring, uint64_t *user_data, int32_t *result);
/// Submits a NOP (an operation the restrictions forbid) and returns its result: -EACCES on a locked ring.
int ckvm_uring_probe_forbidden(struct ckvm_uring *ring);

#endif
