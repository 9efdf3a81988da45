// malloc and calloc, interposed in the test process (this target is linked into the test executable only):
// they count on the threads that asked, then forward to glibc's own allocator. Every Swift heap object and
// array buffer comes from malloc (swift_slowAlloc), so a path that allocates shows up here.
#include "CAllocCount.h"
#include <stddef.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);

static _Thread_local int counting;
static _Thread_local uint64_t counted;

void *malloc(size_t size) {
    if (counting) counted++;
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    if (counting) counted++;
    return __libc_calloc(count, size);
}

void alloc_count_begin(void) { counted = 0; counting = 1; }

uint64_t alloc_count_end(void) { counting = 0; return counted; }
