// runtime.c: the few C library functions the Embedded Swift runtime links against.
//
// Compiled freestanding with -fno-builtin, so the loops below stay loops instead of being
// "optimised" back into calls to themselves, and with -mgeneral-regs-only (no SSE).
#include <stddef.h>
#include <stdint.h>

void *memset(void *dst, int value, size_t count) {
    unsigned char *d = dst;
    while (count--) *d++ = (unsigned char)value;
    return dst;
}

void *memcpy(void *restrict dst, const void *restrict src, size_t count) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (count--) *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t count) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (count--) *d++ = *s++;
    } else {
        d += count;
        s += count;
        while (count--) *--d = *--s;
    }
    return dst;
}

// Heap: a bump allocator over a fixed arena in .bss. `free` never gives memory back;
// the guest allocates little (a few buffers at start-up) and lives only for one run.
#define HEAP_SIZE (256 * 1024)
static _Alignas(4096) unsigned char heap[HEAP_SIZE];
static size_t heap_used;

int posix_memalign(void **result, size_t alignment, size_t size) {
    // alignment is a power of two (the Swift runtime guarantees it, as POSIX requires).
    size_t start = (heap_used + alignment - 1) & ~(alignment - 1);
    if (alignment > 4096 || start > HEAP_SIZE || size > HEAP_SIZE - start) {
        return 12;  // ENOMEM
    }
    heap_used = start + size;
    *result = &heap[start];
    return 0;
}

void free(void *pointer) {
    (void)pointer;
}
