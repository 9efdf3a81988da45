// Functions that need _GNU_SOURCE (set for this target in Package.swift) live here, not in the header:
// the header is imported into Swift next to Glibc's module, and both must see libc the same way.
#include "CKvm.h"
#include <pthread.h>
#include <sched.h>

int ckvm_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }

int ckvm_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int ckvm_current_cpu(void) { return sched_getcpu(); }
