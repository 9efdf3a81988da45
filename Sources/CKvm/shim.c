// Functions that need _GNU_SOURCE (set for this target in Package.swift) live here, not in the header:
// the header is imported into Swift next to Glibc's module, and both must see libc the same way.
#include "CKvm.h"
#include <pthread.h>
#include <sched.h>

int ckvm_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }
#include <fcntl.h>

int ckvm_fallocate(int fd, int mode, int64_t offset, int64_t length) { return fallocate(fd, mode, offset, length); }

#include <sys/uio.h>
long ckvm_rw_nowait(int fd, const struct iovec *iov, int count, int64_t offset, int write) {
    return write ? pwritev2(fd, iov, count, offset, RWF_NOWAIT) : preadv2(fd, iov, count, offset, RWF_NOWAIT);
}

int ckvm_usable_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    return CPU_COUNT(&set);
}

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>

int ckvm_tap_open(const char *name, char *actual_name, size_t actual_name_size, int *existed) {
    return ckvm_tap_open_queue(name, 0, actual_name, actual_name_size, existed);
}

int ckvm_tap_set_queue(int fd, int attach) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = attach ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
    return ioctl(fd, TUNSETQUEUE, &ifr);
}

int ckvm_tap_open_queue(const char *name, int multi_queue, char *actual_name, size_t actual_name_size, int *existed) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); errno = e; return -1; }
    int header = 12;  /* struct virtio_net_hdr_v1 (with num_buffers) */
    if (ioctl(fd, TUNSETVNETHDRSZ, &header) < 0) { int e = errno; close(fd); errno = e; return -1; }
    if (ioctl(fd, TUNSETOFFLOAD, 0) < 0) { int e = errno; close(fd); errno = e; return -1; }
    /* TUNSETIFF rewrote ifr_name (a "%d" template becomes the kernel's choice); TUNGETIFF reports
       IFF_PERSIST for an interface that existed before (this fd never makes one persistent). */
    struct ifreq current;
    memset(&current, 0, sizeof current);
    if (ioctl(fd, TUNGETIFF, &current) < 0) { int e = errno; close(fd); errno = e; return -1; }
    if (existed) *existed = (current.ifr_flags & IFF_PERSIST) != 0;
    if (actual_name && actual_name_size > 0) {
        strncpy(actual_name, current.ifr_name, actual_name_size - 1);
        actual_name[actual_name_size - 1] = 0;
    }
    return fd;
}

int ckvm_if_configure(const char *name, uint32_t address_be, uint32_t netmask_be, int set_address) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return -1;
    struct ifreq ifr;
    int result = -1;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (set_address) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = address_be;
        if (ioctl(sock, SIOCSIFADDR, &ifr) < 0) goto out;
        sin->sin_addr.s_addr = netmask_be;
        if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0) goto out;
    }
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) goto out;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) goto out;
    result = 0;
out:
    { int e = errno; close(sock); errno = e; }
    return result;
}

int ckvm_open_pty(char *path, size_t path_size) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    if (grantpt(fd) < 0 || unlockpt(fd) < 0 || ptsname_r(fd, path, path_size) != 0) {
        int e = errno; close(fd); errno = e; return -1;
    }
    return fd;
}

int ckvm_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int ckvm_current_cpu(void) { return sched_getcpu(); }
/* Inline assembly rather than __atomic_compare_exchange on unsigned __int128: without -mcx16 the compiler
 * calls libatomic, which may fall back to a lock of its own -- atomic only against other libatomic users,
 * not against the guest's hardware cmpxchg16b on the same memory. `lock cmpxchg16b` is atomic against every
 * agent that reaches the cache line, which is what real hardware gives the guest. */
int ckvm_cmpxchg16b(void *p, uint64_t expected[2], const uint64_t desired[2]) {
    uint64_t lo = expected[0], hi = expected[1];
    unsigned char ok;
    __asm__ __volatile__("lock cmpxchg16b %1\n\tsete %0"
                         : "=q"(ok), "+m"(*(volatile unsigned __int128 *)p), "+a"(lo), "+d"(hi)
                         : "b"(desired[0]), "c"(desired[1])
                         : "memory", "cc");
    expected[0] = lo;
    expected[1] = hi;
    return ok;
}

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

int ckvm_name_mapping(void *address, size_t length, const char *name) {
    return prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)address, length, (unsigned long)name);
}
