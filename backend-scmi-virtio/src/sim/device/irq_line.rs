//! The simulated device's interrupt line: delivered to a registered [`IrqHandler`] on the device
//! thread ([`SimDevice::set_irq_handler`]), or waited on by an embedder thread ([`IrqLine`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use fwipc_transport_api::SpinBudget;

use super::{lock, Dev, Shared, SimDevice};

/// The driver's interrupt handler as the device delivers it: called with no device lock held,
/// whenever the line is raised (and again while it stays raised).
pub type IrqHandler = Box<dyn Fn() + Send + Sync>;

impl SimDevice {
    /// Deliver the interrupt line to `handler` (the driver's interrupt entry point, such as
    /// `ScmiVirtio::complete`), or stop delivering it (`None`). The device thread runs the
    /// handler right after it raises the line, with none of its locks held, the way an interrupt
    /// controller runs the handler on a CPU: no separate interrupt thread, so a completion costs
    /// no extra thread hand-off. A line raised by another thread (fault injection, a step)
    /// is delivered by the device thread's next pass or by the stepping thread.
    ///
    /// Returns once a delivery in progress has finished, so after `set_irq_handler(None)` the
    /// previous handler runs no more.
    pub fn set_irq_handler(&self, handler: Option<IrqHandler>) {
        {
            let mut h = self
                .sh
                .irq_handler
                .write()
                .unwrap_or_else(|e| e.into_inner());
            // Relaxed: a hint that lets the device thread skip the lock; the handler itself is
            // read under the lock.
            self.sh
                .irq_handled
                .store(handler.is_some(), Ordering::Relaxed);
            *h = handler;
        }
        // A line raised before the handler was set is delivered now.
        self.sh.signal_irq();
    }
}

impl Shared {
    /// Called by the device thread after a pass, with the device lock `d`: if a handler is set
    /// and the line is raised, release the lock, run the handler, and take the lock again.
    pub(super) fn deliver_irq<'a>(&'a self, d: MutexGuard<'a, Dev>) -> MutexGuard<'a, Dev> {
        // Relaxed: see `SimDevice::set_irq_handler`.
        if !self.irq_handled.load(Ordering::Relaxed) || *lock(&self.isr) == 0 {
            return d;
        }
        drop(d);
        self.run_irq_handler();
        lock(&self.dev)
    }

    /// Run the handler if one is set and the line is raised. The caller holds no device lock
    /// (the handler calls into the driver, which takes it through `SimTransport`).
    pub(super) fn run_irq_handler(&self) {
        // Relaxed: see `SimDevice::set_irq_handler`; with no handler set (every polled
        // transport) a step takes no lock here. A handler set while we look is delivered by
        // the device thread, which `set_irq_handler` signals.
        if !self.irq_handled.load(Ordering::Relaxed) {
            return;
        }
        let h = self.irq_handler.read().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.as_ref() {
            if *lock(&self.isr) != 0 {
                h();
            }
        }
    }

    /// The line was raised outside a device-thread pass: wake an [`IrqLine`] waiter, and the
    /// device thread if it delivers the line to a handler.
    pub(super) fn signal_irq(&self) {
        self.irq.notify_all();
        // Relaxed: see `SimDevice::set_irq_handler`.
        if self.irq_handled.load(Ordering::Relaxed) {
            self.hint();
            self.wake.notify_all();
        }
    }
}

/// The interrupt line of a [`SimDevice`] for an embedder thread that waits on it and calls the
/// driver's completion entry point (the alternative to [`SimDevice::set_irq_handler`]).
pub struct IrqLine {
    pub(super) sh: Arc<Shared>,
    /// The spin of [`IrqLine::wait`] before it sleeps, learned from how its waits end.
    pub(super) idle: SpinBudget,
}

/// A clone is the same line for another thread, which learns its own spin.
impl Clone for IrqLine {
    fn clone(&self) -> Self {
        IrqLine {
            sh: self.sh.clone(),
            idle: SpinBudget::new(),
        }
    }
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
        if self
            .idle
            .spin_until(|| *lock(&self.sh.isr) != 0, std::thread::yield_now)
        {
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
