// A diagnostic for the footprint tools (Tests/Footprint, docs/benchmarks.md "Footprint"); off unless asked for.
//
// The kernel's fault-around maps up to 64 KiB of a file's cached pages around every page fault, but never past
// the end of the faulting mapping. With ACTOR_VMM_NO_FAULT_AROUND=1 in the environment, this constructor splits
// the program's own file-backed mappings into one-page mappings (by giving every other page another, inert
// flag: MADV_NOHUGEPAGE), before anything but libc's start-up has run. /proc/PID/pagemap then shows exactly
// the pages the program touches: how symbol-order.sh finds the functions that run natively but not under
// valgrind, and how resident.py measures the true working set. It costs thousands of system calls and page
// faults, so it is never on by default.
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/// Splits the file-backed part of each PT_LOAD segment of the main program into one-page mappings.
static int split_program_mappings(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    if (info->dlpi_name != NULL && info->dlpi_name[0] != '\0') return 0;  // the main program comes first
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *header = &info->dlpi_phdr[i];
        if (header->p_type != PT_LOAD) continue;
        uintptr_t start = (info->dlpi_addr + header->p_vaddr) & ~(page - 1);
        uintptr_t end = (info->dlpi_addr + header->p_vaddr + header->p_filesz) & ~(page - 1);
        for (uintptr_t address = start; address < end; address += 2 * page) {
            madvise((void *)address, page, MADV_NOHUGEPAGE);
        }
    }
    return 1;
}

__attribute__((constructor(101))) static void ckvm_footprint_no_fault_around(void) {
    const char *value = getenv("ACTOR_VMM_NO_FAULT_AROUND");
    if (value != NULL && strcmp(value, "1") == 0) dl_iterate_phdr(split_program_mappings, NULL);
}
