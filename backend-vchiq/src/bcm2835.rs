//! Bare-metal glue for the Raspberry Pi (BCM2835/6/7): the VCHIQ doorbell registers and the
//! VideoCore bus-address alias, for embedders writing a [`Platform`] on real hardware.
//!
//! **Unverified on hardware** (written from docs/protocols/vchiq.md §3 "Doorbells" and §5): no Pi
//! in CI. The simulator does not use this module.
//!
//! ```no_run
//! # use fwipc_vchiq::bcm2835::{Bell, PiPlatform};
//! // Identity-mapped bare metal on a Pi 3: the doorbell block at ARM physical 0x3F00_B840.
//! // SAFETY (of the example): the address is the MMIO block, mapped device-nGnRE.
//! let bell = unsafe { Bell::new(0x3F00_B840 as *mut u32) };
//! let platform = PiPlatform::new(bell, 0xC000_0000);
//! ```

use core::ptr::NonNull;
#[cfg(not(any(
    target_arch = "aarch64",
    all(target_arch = "arm", target_feature = "v7")
)))]
use core::sync::atomic::{fence, Ordering};

use crate::platform::Platform;

/// `dsb sy`: completes every earlier memory access (loads and stores, to Normal and Device
/// memory, for every observer in the system, the VideoCore included) before any later one. What
/// Linux's `mb()`/`dsb(sy)` is on arm and arm64. Also a compiler barrier (no `nomem`).
/// Elsewhere (host builds and tests of this module): `fence(SeqCst)`.
#[inline(always)]
pub fn dsb_sy() {
    #[cfg(any(
        target_arch = "aarch64",
        all(target_arch = "arm", target_feature = "v7")
    ))]
    // SAFETY: a barrier instruction; it reads and writes no register or memory the compiler
    // allocates, and leaves the flags alone. Without `nomem` the compiler also treats it as a
    // memory clobber, so it does not move accesses across it.
    unsafe {
        core::arch::asm!("dsb sy", options(nostack, preserves_flags))
    };
    #[cfg(not(any(
        target_arch = "aarch64",
        all(target_arch = "arm", target_feature = "v7")
    )))]
    // SeqCst fence: the host stand-in for `dsb sy` (every ordering a fence can give).
    fence(Ordering::SeqCst);
}

/// `dsb st` (Linux arm64 `wmb()`): every earlier store completes before any later store. On
/// 32-bit ARMv7, `dsb st` too (Linux arm `wmb()`). Host builds: `fence(SeqCst)`.
#[inline(always)]
pub fn dsb_st() {
    #[cfg(any(
        target_arch = "aarch64",
        all(target_arch = "arm", target_feature = "v7")
    ))]
    // SAFETY: a barrier instruction touching no allocated register or memory, flags preserved;
    // a compiler memory clobber (no `nomem`).
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags))
    };
    #[cfg(not(any(
        target_arch = "aarch64",
        all(target_arch = "arm", target_feature = "v7")
    )))]
    // SeqCst fence: host stand-in.
    fence(Ordering::SeqCst);
}

/// `dsb ld` on aarch64 (Linux arm64 `rmb()`): every earlier load completes before any later
/// access. ARMv7 has no load-only `dsb`, so `dsb sy` there (Linux arm `rmb()`). Host builds:
/// `fence(SeqCst)`.
#[inline(always)]
pub fn dsb_ld() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction touching no allocated register or memory, flags preserved;
    // a compiler memory clobber (no `nomem`).
    unsafe {
        core::arch::asm!("dsb ld", options(nostack, preserves_flags))
    };
    #[cfg(all(target_arch = "arm", target_feature = "v7"))]
    dsb_sy();
    #[cfg(not(any(
        target_arch = "aarch64",
        all(target_arch = "arm", target_feature = "v7")
    )))]
    // SeqCst fence: host stand-in.
    fence(Ordering::SeqCst);
}

/// BELL0 (VPU→ARM): reading returns the pending bits and clears them.
pub const BELL0: usize = 0x00;
/// BELL2 (ARM→VPU): writing 0 rings the VPU.
pub const BELL2: usize = 0x08;
/// The VCHIQ bit in BELL0.
pub const BELL0_VCHIQ: u32 = 0x4;

/// The doorbell register block (bus address 0x7E00_B840; the DT `reg` length is 0x3C).
pub struct Bell {
    base: NonNull<u32>,
}

// SAFETY: MMIO registers are accessed only with volatile reads/writes; ringing from several
// threads is harmless (each write is an independent doorbell).
unsafe impl Send for Bell {}
// SAFETY: as above.
unsafe impl Sync for Bell {}

impl Bell {
    /// # Safety
    /// `base` must be the CPU address of the doorbell block, mapped as device memory, valid for
    /// the life of the value and not used by anyone else for BELL0/BELL2.
    pub unsafe fn new(base: *mut u32) -> Self {
        Bell {
            base: NonNull::new(base).expect("doorbell base"),
        }
    }

    /// Ring the VPU: write 0 to BELL2, after a `dsb st` (Linux's `writel` has a write barrier
    /// before the store), so every shared-memory store made before the call (the message, tx_pos,
    /// `fired`) reaches the VPU no later than the doorbell. The protocol already issues a full
    /// barrier (`mb`) before ringing; this one keeps `ring` correct when called on its own.
    pub fn ring(&self) {
        dsb_st();
        // SAFETY: in the register block (`new`'s contract); a volatile store to MMIO.
        unsafe { core::ptr::write_volatile(self.base.as_ptr().add(BELL2 / 4), 0) };
    }

    /// In the interrupt handler: read (and so clear) BELL0; `true` if the VCHIQ bit was set,
    /// in which case the embedder calls [`crate::Vchiq::after_wake`] and schedules
    /// [`crate::Vchiq::poll`].
    pub fn take_irq(&self) -> bool {
        // SAFETY: in the register block; a volatile load from MMIO (read-to-clear).
        let v = unsafe { core::ptr::read_volatile(self.base.as_ptr().add(BELL0 / 4)) };
        // Read barrier after the register read (Linux's `readl` has one): the loads of `fired`
        // and of the slots that follow are not satisfied before the doorbell was seen (review
        // point 11; the waiter protocol's re-check already prevents a lost wake-up, this keeps
        // `poll` from reading a stale `fired` and idling until the next doorbell).
        dsb_ld();
        v & BELL0_VCHIQ != 0
    }
}

/// A [`Platform`] for identity-mapped bare metal: bus = physical | `alias` (0xC000_0000, the
/// uncached alias the VPU expects; memory must lie in the low 1 GiB), coherent memory (no cache
/// maintenance needed because the region and bulk buffers are mapped non-cacheable; override
/// `dma_clean`/`dma_invalidate` in your own platform if bulk buffers are cacheable).
///
/// Barriers: `wmb` = `dsb st`, `rmb` = `dsb ld`, `mb` = `dsb sy` (Linux arm64's `wmb`/`rmb`/
/// `mb`): the VideoCore is a bus master outside the ARM's inner-shareable domain, where the
/// `dmb ish` of `fence(SeqCst)` orders nothing. On ARMv6 (Pi 1/Zero) there is no `dsb`
/// instruction (it is `mcr p15, 0, r0, c7, c10, 4`); that target is not supported here and falls
/// back to `fence(SeqCst)`, which is not enough on hardware.
pub struct PiPlatform {
    bell: Bell,
    alias: u32,
}

impl PiPlatform {
    /// Doorbell + bus alias.
    pub fn new(bell: Bell, alias: u32) -> Self {
        PiPlatform { bell, alias }
    }
}

// SAFETY: with identity mapping, CPU page address == physical address; the VPU reaches it at
// physical | alias for addresses below 1 GiB (checked), until the core unmaps it.
unsafe impl Platform for PiPlatform {
    fn ring_doorbell(&self) {
        self.bell.ring();
    }
    fn wmb(&self) {
        dsb_st();
    }
    fn rmb(&self) {
        dsb_ld();
    }
    fn mb(&self) {
        dsb_sy();
    }
    fn map_page(&self, cpu_page: usize) -> Option<u32> {
        (cpu_page < (1 << 30)).then_some(cpu_page as u32 | self.alias)
    }
    fn bus_to_cpu(&self, bus_page: u32) -> Option<usize> {
        Some((bus_page & !self.alias) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bell_registers_and_alias() {
        let mut regs = [0u32; 16];
        regs[0] = BELL0_VCHIQ | 1;
        // SAFETY: a plain array stands in for the register block for the test's duration.
        let bell = unsafe { Bell::new(regs.as_mut_ptr()) };
        assert!(bell.take_irq());
        regs[2] = 0xFFFF_FFFF;
        // SAFETY: as above.
        let bell = unsafe { Bell::new(regs.as_mut_ptr()) };
        bell.ring();
        assert_eq!(regs[2], 0, "ring writes 0 to BELL2");
        let p = PiPlatform::new(bell, 0xC000_0000);
        assert_eq!(p.map_page(0x0012_3000), Some(0xC012_3000));
        assert_eq!(p.map_page(0x4000_0000), None, "above 1 GiB");
        assert_eq!(p.bus_to_cpu(0xC012_3000), Some(0x0012_3000));
    }
}
