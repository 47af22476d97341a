//! aarch64 pieces: [`GenericTimer`], a [`fwipc_transport_api::Clock`] on the Arm generic timer's
//! virtual counter, and [`WfeParker`], an [`EventParker`] whose idle step is `wfe`.
//!
//! Compiled only with the `aarch64` feature on `target_arch = "aarch64"`. Runs at EL1 (or EL0 when
//! the kernel grants counter access through `CNTKCTL_EL1.EL0VCTEN`).

use core::time::Duration;

use crate::parker::EventParker;

/// Reads `CNTVCT_EL0` and converts with `CNTFRQ_EL0` (62.5 MHz under QEMU `virt`).
#[derive(Debug, Clone, Copy)]
pub struct GenericTimer {
    freq_hz: u64,
}

impl GenericTimer {
    /// Reads the counter frequency once.
    pub fn new() -> Self {
        let freq: u64;
        // SAFETY: reading CNTFRQ_EL0 has no side effects and is permitted at EL1 (and at EL0 when
        // the counter is exposed).
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack)) };
        GenericTimer {
            // A zero frequency would be a broken platform; 1 Hz keeps the arithmetic defined.
            freq_hz: freq.max(1),
        }
    }

    /// The counter frequency in Hz.
    pub fn frequency(&self) -> u64 {
        self.freq_hz
    }

    /// Raw counter ticks. The `isb` keeps the read from being hoisted above earlier instructions
    /// (Arm ARM: counter reads may be performed speculatively and out of order).
    pub fn ticks(&self) -> u64 {
        let ticks: u64;
        // SAFETY: `isb` only synchronises the instruction stream; reading CNTVCT_EL0 has no side
        // effects and is permitted where CNTFRQ_EL0 is.
        unsafe {
            core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) ticks, options(nomem, nostack))
        };
        ticks
    }

    /// Nanoseconds since the counter started.
    pub fn now_ns(&self) -> u64 {
        let ns = u128::from(self.ticks()) * 1_000_000_000 / u128::from(self.freq_hz);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// A deadline `d` from now, in this clock's nanoseconds.
    pub fn deadline(&self, d: Duration) -> u64 {
        self.now_ns()
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Whether `deadline_ns` has passed.
    pub fn expired(&self, deadline_ns: u64) -> bool {
        self.now_ns() >= deadline_ns
    }
}

impl Default for GenericTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl fwipc_transport_api::Clock for GenericTimer {
    fn now(&self) -> fwipc_transport_api::Instant {
        fwipc_transport_api::Instant(self.now_ns())
    }
}

/// Wait for an event: returns after a `sev` from any CPU (e.g. [`EventParker`]'s waker), an
/// interrupt, the generic timer's event stream, or at once if the event register was already set.
pub fn wfe() {
    // SAFETY: `wfe` only waits; it touches no memory.
    unsafe { core::arch::asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Run `f` with IRQs masked on the calling CPU, restoring the previous mask after: for a lock
/// that an interrupt handler on this CPU may also take (a heap, a console), so the handler can
/// never spin on a lock held by the code it interrupted. Call at EL1.
pub fn without_irqs<R>(f: impl FnOnce() -> R) -> R {
    let daif: u64;
    // SAFETY: reads DAIF and masks IRQs on this CPU only. Not `nomem`: the compiler keeps the
    // caller's memory accesses after it. A write to DAIFSet takes effect for what follows.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nostack)) };
    let r = f();
    // SAFETY: restores the saved mask (unmasks only if IRQs were unmasked on entry); not
    // `nomem`, so `f`'s memory accesses stay before it.
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nostack)) };
    r
}

/// Start the generic timer's event stream: an event every `2^(bit + 1)` counter ticks (bit 14 at
/// 62.5 MHz is about 0.5 ms), which bounds every [`wfe`] and so makes [`WfeParker`] timeouts
/// accurate to one period. Writes `CNTKCTL_EL1` (EVNTI = `bit`, EVNTDIR = 0, EVNTEN = 1; the other
/// fields are kept): call at EL1.
pub fn enable_event_stream(bit: u8) {
    let mut v: u64;
    // SAFETY: reading CNTKCTL_EL1 at EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, cntkctl_el1", out(reg) v, options(nomem, nostack)) };
    v &= !0xf4; // EVNTI [7:4], EVNTDIR [3], EVNTEN [2]
    v |= (u64::from(bit & 0xf) << 4) | (1 << 2);
    // SAFETY: writing CNTKCTL_EL1 at EL1 only configures the event stream and EL0's counter
    // access (kept as it was); the `isb` makes it take effect.
    unsafe { core::arch::asm!("msr cntkctl_el1, {}", "isb", in(reg) v, options(nostack)) };
}

/// An [`EventParker`] that sleeps in `wfe` (or any idle step given to [`EventParker::new`], e.g.
/// one that unmasks interrupts around the `wfe`), timing out on a [`GenericTimer`] by default.
pub type WfeParker<C = GenericTimer> = EventParker<C>;

impl<C: fwipc_transport_api::Clock> EventParker<C> {
    /// A parker whose idle step is a plain [`wfe`]. Bound the sleep with an interrupt source or
    /// [`enable_event_stream`] if timeouts must be honoured while nothing wakes the parker.
    pub fn wfe(clock: C) -> Self {
        EventParker::new(clock, wfe)
    }
}
