//! Entry points and exception vectors (QEMU `virt`, booted with `-kernel` at EL1, MMU off).
//!
//! `_start` parks every CPU but the first (QEMU starts secondaries powered off under PSCI anyway), enables FP/SIMD (rustc uses q-registers for memcpy, and
//! they trap while `CPACR_EL1.FPEN` is 0), selects `SP_EL1`, sets the stack from the linker script,
//! zeroes `.bss`, installs the vector table and calls [`crate::guest_main`], which turns the MMU
//! on later (`guest_mmu_on`, once the page tables are built). `_secondary_start` is the PSCI
//! CPU_ON entry of the other CPUs (`smp.rs`): FP/SIMD, `SP_EL1`, MMU and caches on with the boot
//! CPU's tables, its own stack, the same vectors, then `smp::secondary_main`.
//!
//! Every exception but an IRQ from EL1 is fatal: the vector stub passes its index and the syndrome
//! registers to [`crate::guest_exception`], which prints them and powers off, so a fault shows up
//! as a failed run in seconds instead of a hang that only the host-side timeout would catch. IRQs
//! (unmasked on every CPU once its GIC CPU interface is up, see `irq.rs`) go to `irq::guest_irq`
//! with all caller-saved state preserved.

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    msr     daifset, #0xf
    mrs     x19, mpidr_el1
    and     x19, x19, #0xff
    cbnz    x19, 9f
    mov     x19, #(3 << 20)
    msr     cpacr_el1, x19
    // isb: the FP/SIMD enable must take effect before any FP/SIMD instruction (Arm ARM,
    // "Synchronization requirements for AArch64 System registers"); likewise after VBAR_EL1.
    isb
    msr     spsel, #1
    ldr     x19, =__stack_top
    mov     sp, x19
    ldr     x19, =__bss_start
    ldr     x20, =__bss_end
1:  cmp     x19, x20
    b.hs    2f
    str     xzr, [x19], #8
    b       1b
2:  ldr     x19, =guest_vectors
    msr     vbar_el1, x19
    isb
    bl      guest_main
9:  wfe
    b       9b

    // PSCI CPU_ON entry of a secondary CPU (PSCI DEN0022, CPU_ON: entered at the caller's EL with
    // the MMU and caches off, x0 = context_id). The context is a `smp::SecondaryBoot`: the MMU
    // registers (its first three words, as `guest_mmu_on` reads them), then the stack top. The MMU
    // goes on before the stack is touched, so the stack is only ever accessed cacheable.
    .global _secondary_start
_secondary_start:
    msr     daifset, #0xf
    mov     x19, x0
    mov     x20, #(3 << 20)
    msr     cpacr_el1, x20
    // isb: as in `_start` (FP/SIMD enable, then VBAR_EL1, visible before they are relied on).
    isb
    msr     spsel, #1
    bl      guest_mmu_on
    ldr     x20, [x19, #24]
    mov     sp, x20
    ldr     x20, =guest_vectors
    msr     vbar_el1, x20
    isb
    mov     x0, x19
    bl      secondary_main
8:  wfe
    b       8b

    // guest_mmu_on(regs: *const MmuRegs): MAIR_EL1, TCR_EL1, TTBR0_EL1 from regs[0..3], then
    // SCTLR_EL1 M, C and I. A leaf: uses x0-x3 only, no stack (safe before a stack is mapped).
    .global guest_mmu_on
guest_mmu_on:
    ldp     x1, x2, [x0]
    ldr     x3, [x0, #16]
    msr     mair_el1, x1
    msr     tcr_el1, x2
    msr     ttbr0_el1, x3
    // The isb makes the new MAIR/TCR/TTBR0 visible to what follows (Arm ARM, "Synchronization
    // requirements for AArch64 System registers"); then drop any stale TLB entries and I-cache
    // lines of this CPU (from reset or firmware): tlbi/ic, dsb nsh to wait for their completion
    // on this PE, isb so the next instruction fetch sees the result (Arm ARM, "TLB maintenance
    // instructions", "Instruction cache maintenance instructions").
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    mrs     x1, sctlr_el1
    orr     x1, x1, #(1 << 0)
    orr     x1, x1, #(1 << 2)
    orr     x1, x1, #(1 << 12)
    msr     sctlr_el1, x1
    // Context synchronization: the instructions after this run translated and cached.
    isb
    ret

    .macro  vector index
    .balign 0x80
    mov     x0, #\index
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    b       guest_exception
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global guest_vectors
guest_vectors:
    vector 0
    vector 1
    vector 2
    vector 3
    vector 4
    .balign 0x80
    b       guest_irq_entry
    vector 6
    vector 7
    vector 8
    vector 9
    vector 10
    vector 11
    vector 12
    vector 13
    vector 14
    vector 15

    // IRQ from EL1 with SP_EL1 (the only IRQ the guest takes: see irq.rs), on the interrupted
    // code's stack. Saves every register the AAPCS64 lets `guest_irq` clobber (x0-x18, x30,
    // q0-q31, FPCR/FPSR) plus ELR/SPSR, calls it, restores, returns. 704 bytes keeps SP 16-byte
    // aligned.
guest_irq_entry:
    sub     sp, sp, #704
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x30, [sp, #144]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #160]
    mrs     x0, fpcr
    mrs     x1, fpsr
    stp     x0, x1, [sp, #176]
    stp     q0, q1, [sp, #192]
    stp     q2, q3, [sp, #224]
    stp     q4, q5, [sp, #256]
    stp     q6, q7, [sp, #288]
    stp     q8, q9, [sp, #320]
    stp     q10, q11, [sp, #352]
    stp     q12, q13, [sp, #384]
    stp     q14, q15, [sp, #416]
    stp     q16, q17, [sp, #448]
    stp     q18, q19, [sp, #480]
    stp     q20, q21, [sp, #512]
    stp     q22, q23, [sp, #544]
    stp     q24, q25, [sp, #576]
    stp     q26, q27, [sp, #608]
    stp     q28, q29, [sp, #640]
    stp     q30, q31, [sp, #672]
    bl      guest_irq
    ldp     q30, q31, [sp, #672]
    ldp     q28, q29, [sp, #640]
    ldp     q26, q27, [sp, #608]
    ldp     q24, q25, [sp, #576]
    ldp     q22, q23, [sp, #544]
    ldp     q20, q21, [sp, #512]
    ldp     q18, q19, [sp, #480]
    ldp     q16, q17, [sp, #448]
    ldp     q14, q15, [sp, #416]
    ldp     q12, q13, [sp, #384]
    ldp     q10, q11, [sp, #352]
    ldp     q8, q9, [sp, #320]
    ldp     q6, q7, [sp, #288]
    ldp     q4, q5, [sp, #256]
    ldp     q2, q3, [sp, #224]
    ldp     q0, q1, [sp, #192]
    ldp     x0, x1, [sp, #176]
    msr     fpcr, x0
    msr     fpsr, x1
    ldp     x0, x1, [sp, #160]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    ldp     x18, x30, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #704
    eret
"#
);

/// The exception level the guest runs at (1 under QEMU `virt` without `virtualization=on`).
pub fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects and is permitted at EL1 and above.
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack)) };
    (el >> 2) & 3
}
