// A minimal io_uring for virtio-blk (docs/devices.md, "Block I/O through io_uring"): set-up, one kind of
// submission per operation the device needs, and completion reaping — raw system calls, no liburing.
//
// The ring is locked down before it is enabled: it starts disabled (IORING_SETUP_R_DISABLED), gets the
// completion eventfd and the image as fixed file 0, then restrictions (only READV, WRITEV and FSYNC, every SQE
// must use the fixed file, IOSQE_IO_DRAIN is the only other flag) and only then is enabled. So the ring can
// reach the image and nothing else, whatever the process has open.
#include "CKvm.h"
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <string.h>

static int sys_setup(unsigned entries, struct io_uring_params *p) { return (int)syscall(__NR_io_uring_setup, entries, p); }
static int sys_enter(int fd, unsigned submit, unsigned wait, unsigned flags) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, wait, flags, NULL, 0);
}
static int sys_register(int fd, unsigned op, const void *arg, unsigned n) { return (int)syscall(__NR_io_uring_register, fd, op, arg, n); }

int ckvm_uring_init(struct ckvm_uring *r, unsigned entries, int file_fd, int event_fd) {
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_R_DISABLED;
    int fd = sys_setup(entries, &p);
    if (fd < 0) return -errno;
    r->fd = fd;
    int err = 0;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_NODROP)) { err = -ENOSYS; goto fail; }
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t ring_size = sq_size > cq_size ? sq_size : cq_size;
    void *ring = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (ring == MAP_FAILED) { err = -errno; goto fail; }
    r->ring = ring; r->ring_size = ring_size;
    size_t sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    void *sqes = mmap(NULL, sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) { err = -errno; goto fail; }
    r->sqes = sqes; r->sqes_size = sqes_size;
    char *base = ring;
    r->sq_head = (unsigned *)(base + p.sq_off.head); r->sq_tail = (unsigned *)(base + p.sq_off.tail);
    r->sq_mask = *(unsigned *)(base + p.sq_off.ring_mask); r->sq_array = (unsigned *)(base + p.sq_off.array);
    r->cq_head = (unsigned *)(base + p.cq_off.head); r->cq_tail = (unsigned *)(base + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(base + p.cq_off.ring_mask); r->cqes = base + p.cq_off.cqes;
    r->cq_flags = p.cq_off.flags ? (unsigned *)(base + p.cq_off.flags) : NULL;
    r->sq_entries = p.sq_entries; r->cq_entries = p.cq_entries;
    r->local_tail = *r->sq_tail;

    int files[1] = { file_fd };
    if (sys_register(fd, IORING_REGISTER_FILES, files, 1) < 0) { err = -errno; goto fail; }
    if (event_fd >= 0 && sys_register(fd, IORING_REGISTER_EVENTFD, &event_fd, 1) < 0) { err = -errno; goto fail; }
    struct io_uring_restriction res[5];
    memset(res, 0, sizeof(res));
    res[0].opcode = IORING_RESTRICTION_SQE_OP; res[0].sqe_op = IORING_OP_READV;
    res[1].opcode = IORING_RESTRICTION_SQE_OP; res[1].sqe_op = IORING_OP_WRITEV;
    res[2].opcode = IORING_RESTRICTION_SQE_OP; res[2].sqe_op = IORING_OP_FSYNC;
    res[3].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED; res[3].sqe_flags = IOSQE_FIXED_FILE;
    res[4].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED; res[4].sqe_flags = IOSQE_IO_DRAIN;
    if (sys_register(fd, IORING_REGISTER_RESTRICTIONS, res, 5) < 0) { err = -errno; goto fail; }
    if (sys_register(fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0) { err = -errno; goto fail; }
    return 0;
fail:
    ckvm_uring_exit(r);
    return err;
}

void ckvm_uring_exit(struct ckvm_uring *r) {
    if (r->sqes) munmap(r->sqes, r->sqes_size);
    if (r->ring) munmap(r->ring, r->ring_size);
    if (r->fd >= 0) close(r->fd);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

static struct io_uring_sqe *next_sqe(struct ckvm_uring *r) {
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (r->local_tail - head >= r->sq_entries) return NULL;
    unsigned index = r->local_tail & r->sq_mask;
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)r->sqes + index;
    memset(sqe, 0, sizeof(*sqe));
    r->sq_array[index] = index;
    r->local_tail++;
    return sqe;
}

int ckvm_uring_prep_rw(struct ckvm_uring *r, int write, const struct iovec *iov, unsigned count, uint64_t offset,
                       uint64_t user_data) {
    struct io_uring_sqe *sqe = next_sqe(r);
    if (!sqe) return -EBUSY;
    sqe->opcode = write ? IORING_OP_WRITEV : IORING_OP_READV;
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->fd = 0;
    sqe->addr = (uint64_t)(uintptr_t)iov;
    sqe->len = count;
    sqe->off = offset;
    sqe->user_data = user_data;
    return 0;
}

int ckvm_uring_prep_fdatasync_after_all(struct ckvm_uring *r, uint64_t user_data) {
    struct io_uring_sqe *sqe = next_sqe(r);
    if (!sqe) return -EBUSY;
    sqe->opcode = IORING_OP_FSYNC;
    sqe->flags = IOSQE_FIXED_FILE | IOSQE_IO_DRAIN;  // starts only after every earlier SQE completed
    sqe->fd = 0;
    sqe->fsync_flags = IORING_FSYNC_DATASYNC;
    sqe->user_data = user_data;
    return 0;
}

int ckvm_uring_submit(struct ckvm_uring *r, unsigned wait) {
    __atomic_store_n(r->sq_tail, r->local_tail, __ATOMIC_RELEASE);
    // What completes inside io_uring_enter (page-cache hits) is reaped by the caller right after it: no
    // eventfd signal for those (IORING_CQ_EVENTFD_DISABLED), so the loop is not woken for nothing. The
    // caller reaps after this returns, so a completion posted in between is not missed.
    if (r->cq_flags) __atomic_fetch_or(r->cq_flags, IORING_CQ_EVENTFD_DISABLED, __ATOMIC_RELAXED);
    int result;
    for (;;) {
        // Without SQPOLL the kernel consumes SQEs only in io_uring_enter: what it has not consumed is pending.
        unsigned pending = r->local_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
        if (pending == 0 && wait == 0) { result = 0; break; }
        int n = sys_enter(r->fd, pending, wait, wait ? IORING_ENTER_GETEVENTS : 0);
        if (n >= 0) { result = n; break; }
        if (errno != EINTR) { result = -errno; break; }
    }
    if (r->cq_flags) __atomic_fetch_and(r->cq_flags, ~IORING_CQ_EVENTFD_DISABLED, __ATOMIC_SEQ_CST);
    return result;
}

int ckvm_uring_peek(struct ckvm_uring *r, uint64_t *user_data, int32_t *result) {
    unsigned head = *r->cq_head;
    if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) return 0;
    const struct io_uring_cqe *cqe = (const struct io_uring_cqe *)r->cqes + (head & r->cq_mask);
    *user_data = cqe->user_data;
    *result = cqe->res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return 1;
}

int ckvm_uring_probe_forbidden(struct ckvm_uring *r) {
    struct io_uring_sqe *sqe = next_sqe(r);
    if (!sqe) return -EBUSY;
    sqe->opcode = IORING_OP_NOP;  // not among the allowed operations
    sqe->user_data = UINT64_MAX;
    int submitted = ckvm_uring_submit(r, 1);
    if (submitted < 0) return submitted;
    uint64_t tag; int32_t result;
    return ckvm_uring_peek(r, &tag, &result) == 1 ? result : -EAGAIN;
}
