// Hardware.h: the test guest's only window onto the machine.
//
// Imported into Swift as the bridging header. Swift has no inline assembly, so each
// privileged or device-facing instruction lives here as a one-instruction `static inline`
// C function. Every asm statement is `volatile` and clobbers "memory": the compiler may not
// drop, merge, widen, reorder or hoist an access. On the VMM side each port or MMIO access
// is exactly one VM exit, which is what the tests count and time.
#pragma once
#include <stdint.h>

// ---- Port I/O (`in`/`out`) ---------------------------------------------------------------

static inline void pio_write8(uint16_t port, uint8_t value) {
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline void pio_write16(uint16_t port, uint16_t value) {
    __asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline void pio_write32(uint16_t port, uint32_t value) {
    __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline uint8_t pio_read8(uint16_t port) {
    uint8_t value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port) : "memory");
    return value;
}
static inline uint16_t pio_read16(uint16_t port) {
    uint16_t value;
    __asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(port) : "memory");
    return value;
}
static inline uint32_t pio_read32(uint16_t port) {
    uint32_t value;
    __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port) : "memory");
    return value;
}

// ---- Memory-mapped I/O (one plain `mov` of the given width) -------------------------------
// Addresses are guest-physical; the VMM identity-maps the first 4 GiB.

static inline void mmio_write8(uint64_t address, uint8_t value) {
    __asm__ volatile("movb %0, (%1)" : : "q"(value), "r"(address) : "memory");
}
static inline void mmio_write16(uint64_t address, uint16_t value) {
    __asm__ volatile("movw %0, (%1)" : : "r"(value), "r"(address) : "memory");
}
static inline void mmio_write32(uint64_t address, uint32_t value) {
    __asm__ volatile("movl %0, (%1)" : : "r"(value), "r"(address) : "memory");
}
static inline uint8_t mmio_read8(uint64_t address) {
    uint8_t value;
    __asm__ volatile("movb (%1), %0" : "=q"(value) : "r"(address) : "memory");
    return value;
}
static inline uint16_t mmio_read16(uint64_t address) {
    uint16_t value;
    __asm__ volatile("movw (%1), %0" : "=r"(value) : "r"(address) : "memory");
    return value;
}
static inline uint32_t mmio_read32(uint64_t address) {
    uint32_t value;
    __asm__ volatile("movl (%1), %0" : "=r"(value) : "r"(address) : "memory");
    return value;
}

// ---- CPU ------------------------------------------------------------------------------------

/// Time-stamp counter. Not serialising (no lfence: keep to instructions the host emulates);
/// the surrounding volatile asm keeps it in program order with the I/O it brackets.
static inline uint64_t cpu_rdtsc(void) {
    uint32_t low, high;
    __asm__ volatile("rdtsc" : "=a"(low), "=d"(high) : : "memory");
    return ((uint64_t)high << 32) | low;
}

/// A hint inside spin-wait loops (lets a hyperthread sibling or the host run).
static inline void cpu_pause(void) {
    __asm__ volatile("pause" : : : "memory");
}

/// `sti` / `cli`. The guest runs with interrupts off except while it waits for one.
static inline void cpu_enable_interrupts(void) {
    __asm__ volatile("sti" : : : "memory");
}
static inline void cpu_disable_interrupts(void) {
    __asm__ volatile("cli" : : : "memory");
}

/// Loads the IDT register (`lidt`) with a table at `base` of `limit + 1` bytes.
static inline void cpu_load_idt(uint64_t base, uint16_t limit) {
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } idtr = { limit, base };
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

/// CR2: the linear address of the last page fault.
static inline uint64_t cpu_read_cr2(void) {
    uint64_t value;
    __asm__ volatile("mov %%cr2, %0" : "=r"(value) : : "memory");
    return value;
}

/// Reloads CR3 with its own value: drops every cached translation (after a page-table change).
static inline void cpu_reload_cr3(void) {
    uint64_t value;
    __asm__ volatile("mov %%cr3, %0\n\tmov %0, %%cr3" : "=r"(value) : : "memory");
}

// ---- Memory shared with devices -------------------------------------------------------------
// Virtqueue rings and buffers live in ordinary guest RAM that a device reads and writes
// concurrently. Ring fields are accessed with the one-mov `mmio_read*`/`mmio_write*` helpers
// above (volatile: each access happens exactly once, in program order).

/// Compiler barrier: no memory access moves across it. On x86 (TSO) this is all the ordering
/// store→store (fill a descriptor, then publish it) and load→load (read the used index, then
/// the used element) need.
static inline void compiler_barrier(void) {
    __asm__ volatile("" : : : "memory");
}

/// Full barrier, also ordering an earlier store before a later load (x86 may reorder those):
/// a locked no-op on the stack, as Linux's smp_mb() does (mfence would do too).
static inline void memory_barrier(void) {
    __asm__ volatile("lock orq $0, (%%rsp)" : : : "memory", "cc");
}

// ---- Bulk memory: one string instruction each ----------------------------------------------
// On this project's development host every ring-0 guest instruction goes through the host's
// instruction emulator (~2 µs each), so a loop over a buffer costs microseconds per element.
// A `rep` string instruction is one instruction whose loop runs inside the emulator: about
// 100 times faster. (On hardware virtualisation they are simply fast.) DF is clear (start.S,
// interrupts.S), so they run upwards.

/// Stores `words` copies of `value` from `address` on (`rep stosq`).
static inline void memory_fill64(uint64_t address, uint64_t value, uint64_t words) {
    __asm__ volatile("rep stosq" : "+D"(address), "+c"(words) : "a"(value) : "memory");
}

/// Whether the `words` 64-bit words at `a` and `b` are equal (`repe cmpsq`).
/// (After the loop ZF tells: set if the last compared pair was equal, i.e. all were.)
static inline _Bool memory_equal64(uint64_t a, uint64_t b, uint64_t words) {
    if (words == 0) return 1;  // cmpsq would not run, leaving ZF stale
    _Bool equal;
    __asm__ volatile("repe cmpsq\n\tsete %3"
                     : "+S"(a), "+D"(b), "+c"(words), "=q"(equal) : : "memory", "cc");
    return equal;
}

// ---- Symbols defined in assembly ------------------------------------------------------------

/// The interrupt descriptor table (256 gates of 16 bytes, interrupts.S).
static inline uint64_t guest_idt_address(void) {
    extern uint8_t guest_idt[];
    return (uint64_t)(uintptr_t)guest_idt;
}

/// Entry stub of `vector` (interrupts.S): the stubs are 16 bytes apart, vector 0 first.
static inline uint64_t interrupt_stub_address(uint8_t vector) {
    extern uint8_t interrupt_stubs[];
    return (uint64_t)(uintptr_t)interrupt_stubs + 16 * (uint64_t)vector;
}

/// How often each vector has fired (interrupts.S .bss; counted by `guest_interrupt`).
/// Volatile: wait loops read it while the interrupt handler writes it.
static inline uint32_t interrupt_count(uint8_t vector) {
    extern volatile uint32_t interrupt_counts[256];
    return interrupt_counts[vector];
}
static inline void interrupt_count_increment(uint8_t vector) {
    extern volatile uint32_t interrupt_counts[256];
    interrupt_counts[vector] = interrupt_counts[vector] + 1;
}

/// Guest-physical RAM set aside for device DMA (start.S .bss): rings and buffers.
#define DMA_ARENA_SIZE (1024 * 1024)
static inline uint64_t dma_arena_address(void) {
    extern uint8_t dma_arena[];
    return (uint64_t)(uintptr_t)dma_arena;
}

/// What the entry stub (interrupts.S) saved on the stack, lowest address first: the general
/// registers it pushed, the vector and error code (0 when the CPU pushes none), and the frame
/// the CPU pushed.
struct InterruptFrame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error_code;
    uint64_t rip, cs, rflags, rsp, ss;
};

/// Stops this CPU for good: interrupts off, then halt (again, should anything wake it).
static inline _Noreturn void cpu_halt_forever(void) {
    for (;;) {
        __asm__ volatile("cli; hlt" : : : "memory");
    }
}

// ---- Benchmarks (bench.S) -------------------------------------------------------------------

/// Reads the TSC, writes `queue_index` to the doorbell at `notify_address`, then waits (sti; hlt)
/// until `bench_irq_stub` has run; returns the TSC read before the doorbell, with IF=0 again.
uint64_t bench_doorbell_and_wait(uint64_t notify_address, uint16_t queue_index);

/// Waits (sti; hlt) for one more run of `bench_irq_stub`, after the doorbell's first interrupt.
uint64_t bench_wait_again(void);

/// The same with a self-IPI: writes `icr_low` to the local APIC's ICR at `icr_address`.
uint64_t bench_self_ipi_and_wait(uint64_t icr_address, uint32_t icr_low);

/// The interrupt entry point that stores the TSC at arrival (its first instruction) and returns.
static inline uint64_t bench_irq_stub_address(void) {
    extern uint8_t bench_irq_stub[];
    return (uint64_t)(uintptr_t)bench_irq_stub;
}

/// The TSC `bench_irq_stub` stored for the last interrupt it took.
static inline uint64_t bench_irq_tsc_value(void) {
    extern volatile uint64_t bench_irq_tsc;
    return bench_irq_tsc;
}
