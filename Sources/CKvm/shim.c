// Functions that need _GNU_SOURCE (set for this target in Package.swift) live here, not in the header:
// the header is imported into Swift next to Glibc's module, and both must see libc the same way.
#include "CKvm.h"
#include <pthread.h>

int ckvm_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }
