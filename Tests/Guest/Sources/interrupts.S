// interrupts.S: the interrupt entry stubs, the IDT and the per-vector interrupt counters.
//
// Every one of the 256 vectors has a 16-byte stub at `interrupt_stubs + 16 * vector`
// (Interrupts.swift points the IDT gates at them). A stub makes the stack look the same for
// all vectors, then jumps to `interrupt_common`:
//
//     ss, rsp, rflags, cs, rip      pushed by the CPU (64-bit mode: RSP first aligned to 16)
//     error code                    pushed by the CPU for vectors 8, 10-14, 17, 21, 29, 30;
//                                   a 0 pushed by the stub for every other vector
//     vector                        pushed by the stub
//     rax, rbx, ... r15             pushed by interrupt_common
//
// which is `struct InterruptFrame` (Hardware.h), handed to the Swift handler
// `guest_interrupt(frame)` (Interrupts.swift). 40 + 8 + 8 + 15 * 8 = 176 bytes: the stack stays
// 16-byte aligned for the call, as the SysV ABI wants. The handler uses no SSE/x87 (the guest
// has none), so the general registers are all the state there is to save.

    .text
    .balign 16
    .globl interrupt_stubs
interrupt_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30
    // The CPU pushed an error code.
    .else
    pushq   $0
    .endif
    pushq   $vector
    jmp     interrupt_common
    .set vector, vector + 1
    .endr

    .balign 16
interrupt_common:
    pushq   %rax
    pushq   %rbx
    pushq   %rcx
    pushq   %rdx
    pushq   %rsi
    pushq   %rdi
    pushq   %rbp
    pushq   %r8
    pushq   %r9
    pushq   %r10
    pushq   %r11
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    cld                             // the ABI wants DF clear on function entry
    mov     %rsp, %rdi              // struct InterruptFrame *
    call    guest_interrupt
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %r11
    popq    %r10
    popq    %r9
    popq    %r8
    popq    %rbp
    popq    %rdi
    popq    %rsi
    popq    %rdx
    popq    %rcx
    popq    %rbx
    popq    %rax
    add     $16, %rsp               // drop the vector and the error code
    iretq

// The IDT: 256 gates of 16 bytes, filled in by Interrupts.install().
    .section .bss.idt, "aw", @nobits
    .balign 16
    .globl guest_idt
guest_idt:
    .skip   256 * 16

// One 32-bit counter per vector, incremented by the handler and read by wait loops.
    .section .bss.interrupt_counts, "aw", @nobits
    .balign 16
    .globl interrupt_counts
interrupt_counts:
    .skip   256 * 4

    .section .note.GNU-stack, "", @progbits
