// runtime.c: the few C library functions the Embedded Swift runtime links against.
//
// Compiled freestanding with -fno-builtin (so nothing here is "optimised" back into calls to
// itself) and -mgeneral-regs-only (no SSE). memset/memcpy use `rep stos`/`rep movs`: one
// instruction whose loop the CPU (or, on this project's development host, the host's
// instruction emulator, see Hardware.h) runs itself, instead of a guest loop of several
// instructions per byte. DF is clear throughout the guest.
#include <stddef.h>
#include <stdint.h>

void *memset(void *dst, int value, size_t count) {
    void *d = dst;
    if ((((uintptr_t)dst | count) & 7) == 0) {
        uint64_t pattern = (uint8_t)value * 0x0101010101010101ull;
        size_t words = count / 8;
        __asm__ volatile("rep stosq" : "+D"(d), "+c"(words) : "a"(pattern) : "memory");
    } else {
        __asm__ volatile("rep stosb" : "+D"(d), "+c"(count) : "a"(value) : "memory");
    }
    return dst;
}

void *memcpy(void *restrict dst, const void *restrict src, size_t count) {
    void *d = dst;
    const void *s = src;
    if ((((uintptr_t)dst | (uintptr_t)src | count) & 7) == 0) {
        size_t words = count / 8;
        __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(words) : : "memory");
    } else {
        __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(count) : : "memory");
    }
    return dst;
}

void *memmove(void *dst, const void *src, size_t count) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d <= s || d >= s + count) {
        return memcpy(dst, src, count);  // forward copy is safe: no overlap, or dst below src
    }
    d += count;  // dst overlaps src from above: copy backwards
    s += count;
    while (count--) *--d = *--s;
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
