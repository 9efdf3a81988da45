// Counting the Swift heap allocations one thread makes (for tests that prove a path allocates nothing).
//
// libswiftCore exports the hooks Instruments uses: when the "swizzling" flag is set, swift_allocObject calls
// through the `_swift_allocObject` function pointer. The counter wraps the original and counts only on the
// thread that asked. Weak references: a runtime without the hooks makes ckvm_alloc_count_install fail (the
// test then says so) instead of failing to link.
#include "CKvm.h"

extern void *(*_swift_allocObject)(const void *metadata, size_t size, size_t align_mask) __attribute__((weak));
extern unsigned char _swift_enableSwizzlingOfAllocationAndRefCountingFunctions_forInstrumentsOnly __attribute__((weak));

static void *(*original_alloc)(const void *, size_t, size_t);
static _Thread_local int counting;
static _Thread_local uint64_t counted;

static void *counting_alloc(const void *metadata, size_t size, size_t align_mask) {
    if (counting) counted++;
    return original_alloc(metadata, size, align_mask);
}

int ckvm_alloc_count_install(void) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    if (&_swift_allocObject == NULL || &_swift_enableSwizzlingOfAllocationAndRefCountingFunctions_forInstrumentsOnly == NULL) return -1;
    pthread_mutex_lock(&lock);
    if (original_alloc == NULL) {
        original_alloc = _swift_allocObject;
        __atomic_store_n(&_swift_allocObject, counting_alloc, __ATOMIC_SEQ_CST);
        __atomic_store_n(&_swift_enableSwizzlingOfAllocationAndRefCountingFunctions_forInstrumentsOnly, 1, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&lock);
    return 0;
}

void ckvm_alloc_count_begin(void) { counted = 0; counting = 1; }

uint64_t ckvm_alloc_count_end(void) { counting = 0; return counted; }
