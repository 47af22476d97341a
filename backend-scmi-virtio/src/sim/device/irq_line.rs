//! [`IrqLine`]: the simulated device's interrupt line.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fwipc_transport_api::Backoff;

use super::{lock, Shared};

/// The interrupt line of a [`SimDevice`](super::SimDevice): an embedder thread waits on it and calls the driver's
/// completion entry point.
#[derive(Clone)]
pub struct IrqLine {
    pub(super) sh: Arc<Shared>,
}

impl core::fmt::Debug for IrqLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IrqLine").finish_non_exhaustive()
    }
}

impl IrqLine {
    /// Wait until an interrupt is pending (the driver acknowledges it through
    /// `Transport::ack_interrupt`) or `timeout` passes; returns whether one is pending.
    pub fn wait(&self, timeout: Duration) -> bool {
        // Spin briefly before sleeping: an interrupt raised within the budget costs no OS
        // wake-up (bounded, then wait as before).
        if Backoff::spin_until(|| *lock(&self.sh.isr) != 0, std::thread::yield_now) {
            return true;
        }
        let g = lock(&self.sh.isr);
        // Relaxed: changed and read only under the `isr` lock (held here, and released only
        // inside the wait), which orders it against `Shared::serve`.
        self.sh.irq_waiters.fetch_add(1, Ordering::Relaxed);
        let (g, _) = self
            .sh
            .irq
            .wait_timeout_while(g, timeout, |isr| *isr == 0)
            .unwrap_or_else(|e| e.into_inner());
        // Relaxed: as above (the lock is held again).
        self.sh.irq_waiters.fetch_sub(1, Ordering::Relaxed);
        *g != 0
    }

    /// Wake any waiter (e.g. to make it notice a stop flag).
    pub fn poke(&self) {
        self.sh.irq.notify_all();
    }
}
