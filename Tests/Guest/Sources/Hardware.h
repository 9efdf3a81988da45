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

/// Stops this CPU for good: interrupts off, then halt (again, should anything wake it).
static inline _Noreturn void cpu_halt_forever(void) {
    for (;;) {
        __asm__ volatile("cli; hlt" : : : "memory");
    }
}
