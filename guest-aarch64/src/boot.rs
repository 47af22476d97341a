//! Entry point and exception vectors (QEMU `virt`, booted with `-kernel` at EL1, MMU off).
//!
//! `_start` parks every CPU but the first, enables FP/SIMD (rustc uses q-registers for memcpy, and
//! they trap while `CPACR_EL1.FPEN` is 0), selects `SP_EL1`, sets the stack from the linker script,
//! zeroes `.bss`, installs the vector table and calls [`crate::guest_main`].
//!
//! Every exception is fatal: the vector stub passes its index and the syndrome registers to
//! [`crate::guest_exception`], which prints them and powers off, so a fault shows up as a failed run
//! in seconds instead of a hang that only the host-side timeout would catch.

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mrs     x19, mpidr_el1
    and     x19, x19, #0xff
    cbnz    x19, 9f
    mov     x19, #(3 << 20)
    msr     cpacr_el1, x19
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
    vector 5
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
"#
);

/// The exception level the guest runs at (1 under QEMU `virt` without `virtualization=on`).
pub fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects and is permitted at EL1 and above.
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack)) };
    (el >> 2) & 3
}
