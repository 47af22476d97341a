//! The guest's `fwipc_transport_api::Clock`: the Arm generic timer's virtual counter.

use core::time::Duration;

/// Reads `CNTVCT_EL0` and converts with `CNTFRQ_EL0` (62.5 MHz under QEMU `virt`).
#[derive(Debug, Clone, Copy)]
pub struct GenericTimer {
    freq_hz: u64,
}

impl GenericTimer {
    /// Reads the counter frequency once.
    pub fn new() -> Self {
        let freq: u64;
        // SAFETY: CNTFRQ_EL0 is readable at EL1; no side effects.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack)) };
        GenericTimer {
            // A zero frequency would be a broken platform; 1 Hz keeps the arithmetic defined.
            freq_hz: freq.max(1),
        }
    }

    /// Nanoseconds since the counter started.
    pub fn now_ns(&self) -> u64 {
        let ticks: u64;
        // SAFETY: CNTVCT_EL0 is readable at EL1; the `isb` keeps the read from being hoisted above
        // earlier instructions (the architecture allows speculative counter reads).
        unsafe {
            core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) ticks, options(nomem, nostack))
        };
        let ns = u128::from(ticks) * 1_000_000_000 / u128::from(self.freq_hz);
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

impl fwipc_transport_api::Clock for GenericTimer {
    fn now(&self) -> fwipc_transport_api::Instant {
        fwipc_transport_api::Instant(self.now_ns())
    }
}

impl Default for GenericTimer {
    fn default() -> Self {
        Self::new()
    }
}
