// Counting the heap allocations one thread makes, for tests that prove a path allocates nothing.
#ifndef CALLOCCOUNT_H
#define CALLOCCOUNT_H
#include <stdint.h>

/// Starts counting this thread's malloc and calloc calls from 0.
void alloc_count_begin(void);
/// Stops counting on this thread; the calls since alloc_count_begin.
uint64_t alloc_count_end(void);

#endif
