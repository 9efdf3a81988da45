// bench.S: the timed part of `bench-notify`, `bench-blk` and `bench-ipi` (BenchVirtio.swift), in as few guest
// instructions as possible (ring-0 guest code may run in the host's instruction emulator, ~1-2 µs
// per instruction, and every instruction inside the timed window would be counted).
//
//   t0 = rdtsc; doorbell write; sti; hlt  ...  interrupt: t1 = rdtsc (first instruction of the stub)
//
// Between the two rdtsc reads the guest executes the doorbell `mov` only (the rest runs while the
// device works, or while the vCPU is halted); t1 is taken by the first instruction of the interrupt
// stub installed for the queue's vector, before anything is saved.

    .text

// uint64_t bench_doorbell_and_wait(uint64_t notify_address, uint16_t queue_index)
// Clears bench_irq_tsc, reads the TSC (returned), writes `queue_index` to the doorbell, then waits
// with interrupts enabled (sti; hlt) until bench_irq_stub has stored the interrupt's TSC in
// bench_irq_tsc; returns with interrupts disabled. Uses rax, rcx, rdx, r8 (all caller-saved); the
// stub clobbers rax and rdx, which is why t0 is kept in rcx and r8.
    .globl bench_doorbell_and_wait
bench_doorbell_and_wait:
    movq    $0, bench_irq_tsc(%rip)
    rdtsc
    movw    %si, (%rdi)             // the doorbell: an ioeventfd, no exit to user space
    jmp     wait_for_bench_irq

// uint64_t bench_self_ipi_and_wait(uint64_t icr_address, uint32_t icr_low)
// The same with a 32-bit write of `icr_low` to the local APIC's ICR (xAPIC MMIO) instead of a
// doorbell: a self-IPI, which KVM's in-kernel APIC delivers without the VMM (row 2's KVM floor).
    .globl bench_self_ipi_and_wait
bench_self_ipi_and_wait:
    movq    $0, bench_irq_tsc(%rip)
    rdtsc
    movl    %esi, (%rdi)
    jmp     wait_for_bench_irq      // not into bench_wait_again below: it clears t0

// uint64_t bench_wait_again(void)
// Waits for one more interrupt of the benchmarked vector (a device that completes a doorbell's requests
// in several batches interrupts once per batch); returns 0, with interrupts disabled. An interrupt
// raised since the last EOI is pending in the local APIC and is taken at the sti.
    .globl bench_wait_again
bench_wait_again:
    movq    $0, bench_irq_tsc(%rip)
    xorl    %eax, %eax
    xorl    %edx, %edx
    jmp     wait_for_bench_irq

// Keeps the TSC in rax:rdx (t0) in rcx:r8, waits for bench_irq_stub, returns t0.
wait_for_bench_irq:
    movl    %eax, %ecx
    movl    %edx, %r8d
1:  sti
    hlt                             // an interrupt pending since the doorbell wakes it at once
    cli
    cmpq    $0, bench_irq_tsc(%rip)
    je      1b                      // woken by something else: wait on
    shlq    $32, %r8
    orq     %r8, %rcx
    movq    %rcx, %rax
    ret

// The interrupt gate of the benchmarked queue's vector points here while the benchmark runs. Only
// ever entered from the hlt above (IF is 0 everywhere else), whose caller has given up rax and rdx.
// No EOI here: the Swift side sends it after bench_doorbell_and_wait returns.
    .balign 16
    .globl bench_irq_stub
bench_irq_stub:
    rdtsc
    movl    %eax, bench_irq_tsc(%rip)
    movl    %edx, bench_irq_tsc+4(%rip)
    iretq

    .section .bss.bench_irq_tsc, "aw", @nobits
    .balign 8
    .globl bench_irq_tsc
bench_irq_tsc:
    .skip   8

    .section .note.GNU-stack, "", @progbits
