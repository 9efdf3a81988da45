// start.S: the guest's entry point.
//
// The VMM enters `_start` in 64-bit long mode at CPL0 with interrupts disabled, identity-mapped
// page tables and a flat GDT, and RSI = guest-physical address of the Linux boot_params
// ("zero page"). Nothing else is promised, so here we: keep RSI, zero .bss, switch to our
// own stack (in .bss), and call the Swift entry `guest_main(bootParams)`, which never returns.

    .section .text.start, "ax"
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    mov     %rsi, %r12              // boot_params address, preserved across the .bss clearing

    // Zero .bss (it also holds the stack, so do it before the first push/call) with one
    // `rep stosq` (the linker script aligns both ends to 16 bytes). Not a loop of stores: .bss is
    // over 1 MiB (the DMA arena), and where ring-0 guest code is emulated a loop costs ~0.5 s per
    // boot, the string instruction a few milliseconds.
    lea     __bss_start(%rip), %rdi
    lea     __bss_end(%rip), %rcx
    sub     %rdi, %rcx
    shr     $3, %rcx
    xor     %eax, %eax
    rep stosq
    lea     guest_stack_top(%rip), %rsp   // 16-byte aligned, as the SysV ABI wants before `call`
    xor     %ebp, %ebp                     // end of the frame-pointer chain
    mov     %r12, %rdi
    call    guest_main

    // guest_main does not return; if it somehow does, power off (ACPI S5), then halt.
    mov     $0x34, %al
    mov     $0x600, %dx
    outb    %al, %dx
3:  cli
    hlt
    jmp     3b
    .size _start, . - _start

// The boot stack: 64 KiB in .bss.
    .section .bss.stack, "aw", @nobits
    .balign 16
guest_stack_bottom:
    .skip   64 * 1024
guest_stack_top:

// Memory for device DMA (virtqueue rings and buffers): 1 MiB in .bss, page-aligned.
// The guest's addresses are guest-physical (identity mapping), so this is what devices see.
// Its size is DMA_ARENA_SIZE in Hardware.h.
    .section .bss.dma, "aw", @nobits
    .balign 4096
    .globl dma_arena
dma_arena:
    .skip   1024 * 1024

    .section .note.GNU-stack, "", @progbits
