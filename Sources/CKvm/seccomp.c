// seccomp: installing a classic BPF filter built by the Swift side (Sources/Cli/Seccomp), and reporting a
// call a filter traps. Everything the SIGSYS handler does is async-signal-safe and allowed by every filter
// (write, prctl(PR_GET_NAME), getpid, gettid), except the final tgkill: see the handler.
#include "CKvm.h"
#include <string.h>
#include <sys/prctl.h>
#include <linux/if_tun.h>

_Static_assert(_IOW('T', 202, int) == TUNSETIFF, "TUNSETIFF");
_Static_assert(_IOW('T', 208, unsigned int) == TUNSETOFFLOAD, "TUNSETOFFLOAD");
_Static_assert(_IOW('T', 216, int) == TUNSETVNETHDRSZ, "TUNSETVNETHDRSZ");
_Static_assert(_IOR('T', 210, unsigned int) == TUNGETIFF, "TUNGETIFF");

int ckvm_seccomp_install(const struct sock_filter *instructions, unsigned short count, unsigned int flags) {
    struct sock_fprog program = { .len = count, .filter = (struct sock_filter *)instructions };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    long result = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &program);
    if (result < 0) return -errno;
    return (int)result;  /* 0, or with TSYNC the id of a thread that could not be synchronised */
}

long ckvm_seccomp_forbidden_call(void) { return syscall(SYS_getppid); }

static void (*reporter_before_exit)(void);

static void append(char *buffer, size_t *length, size_t capacity, const char *text) {
    while (*text && *length + 1 < capacity) buffer[(*length)++] = *text++;
}

static void append_number(char *buffer, size_t *length, size_t capacity, unsigned long value) {
    char digits[24];
    int count = 0;
    do { digits[count++] = (char)('0' + value % 10); value /= 10; } while (value && count < 24);
    while (count > 0 && *length + 1 < capacity) buffer[(*length)++] = digits[--count];
}

/* SIGSYS from SECCOMP_RET_TRAP: the call was not made. One line on stderr, the terminal restored, then the
 * process ends by SIGSYS (as Cloud Hypervisor's handler does). */
static void report_trapped_call(int signal, siginfo_t *info, void *context) {
    (void)signal; (void)context;
    char message[400], thread[17] = {0};
    size_t length = 0;
    prctl(PR_GET_NAME, thread, 0, 0, 0);
    append(message, &length, sizeof message, "actor-vmm: error: seccomp: thread '");
    append(message, &length, sizeof message, thread);
    append(message, &length, sizeof message, "' made system call ");
    append_number(message, &length, sizeof message, (unsigned long)(unsigned int)info->si_syscall);
    const char *name = ckvm_syscall_name(info->si_syscall);
    if (name) {
        append(message, &length, sizeof message, " (");
        append(message, &length, sizeof message, name);
        append(message, &length, sizeof message, ")");
    }
    if (info->si_arch != AUDIT_ARCH_X86_64) append(message, &length, sizeof message, " of another architecture");
    append(message, &length, sizeof message,
           ", which its seccomp filter does not allow; stopping (docs/security.md; --seccomp log only logs such calls)\n");
    ssize_t ignored = write(2, message, length);
    (void)ignored;
    if (reporter_before_exit) reporter_before_exit();
    /* SA_RESETHAND made SIGSYS's action the default (end the process, dumping core): sent to this thread it
     * is delivered as the handler returns, before the interrupted code runs again. Where the thread's filter
     * forbids tgkill, that call traps while SIGSYS is blocked, and the kernel delivers it with the default
     * action at once: the same end. */
    syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGSYS);
}

int ckvm_seccomp_install_reporter(void (*before_exit)(void)) {
    reporter_before_exit = before_exit;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = report_trapped_call;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO | SA_RESETHAND;
    return sigaction(SIGSYS, &action, 0) == 0 ? 0 : errno;
}
