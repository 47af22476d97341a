//! A short, bounded spin before a thread or CPU goes to sleep: what [`crate::Wait::Completion`]
//! does before it parks, and what a simulated remote does before it sleeps when idle. An OS
//! wake-up costs microseconds; a peer that answers within a few microseconds is met spinning.
//!
//! The shape: a bounded run of [`core::hint::spin_loop`] hints with a look after every one (as
//! std's futex mutex spins before it sleeps, and Linux's `smp_cond_load_acquire` waits), then a
//! few calls of a relax hook (`std::thread::yield_now` where there is a scheduler; another spin
//! hint on bare metal), then the caller sleeps as before.
//!
//! Not crossbeam-utils' exponentially longer runs (1, 2, 4 … 64 hints between looks, which this
//! type had before): those suit retrying a contended read-modify-write, where a longer pause
//! lets the holder finish. Every caller here waits for a word the other side writes once; a long
//! run between two looks only delays seeing it, by half the run on average, and that delay is
//! paid on every hand-off of a round trip. Looking after every hint took the parked round trip
//! ((c) in docs/benchmarks.md, one core per side) from 3.33× to 2.12× crossbeam's for fastrpc
//! and from 2.34× to 1.79× for rpmsg-virtio in paired runs. The price: a look that costs more
//! than a load (a simulated remote's service pass) makes the spin phase longer in time, which a
//! pair whose two sides share one core pays per hand-off.

/// A bounded spin-then-relax budget: [`Backoff::snooze`] pauses once per call until
/// [`Backoff::PAUSES`] pauses have passed, then reports the budget spent.
///
/// The budget is fixed and small: [`Backoff::SPIN_STEPS`] pauses of one spin hint each (a few
/// microseconds on current cores, the caller looking again after each), then
/// [`Backoff::RELAX_STEPS`] relax calls. It bounds how long
/// a waiter keeps a core busy whatever the peer does, so a waiter never starves the peer it
/// waits for on a machine with fewer cores than busy threads.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    /// Pauses that spin, one [`core::hint::spin_loop`] each.
    pub const SPIN_STEPS: u32 = 128;
    /// Pauses after the spin phase that call the relax hook.
    pub const RELAX_STEPS: u32 = 4;
    /// Pauses in the whole budget.
    pub const PAUSES: u32 = Self::SPIN_STEPS + Self::RELAX_STEPS;

    /// A fresh budget.
    pub const fn new() -> Self {
        Backoff { step: 0 }
    }

    /// Start the budget over (after the awaited thing happened).
    pub fn reset(&mut self) {
        self.step = 0;
    }

    /// Whether the budget is spent: the caller should sleep now.
    pub fn is_spent(&self) -> bool {
        self.step >= Self::PAUSES
    }

    /// One pause: a spin hint during the spin phase, then `relax`. Returns `false` (without
    /// pausing) once the budget is spent.
    pub fn snooze(&mut self, relax: impl FnOnce()) -> bool {
        if self.is_spent() {
            return false;
        }
        if self.step < Self::SPIN_STEPS {
            core::hint::spin_loop();
        } else {
            relax();
        }
        self.step += 1;
        true
    }

    /// Poll `ready` through one whole budget (a fresh one), pausing between polls; `true` as
    /// soon as it reports ready, `false` once the budget is spent (then sleep as before). The
    /// idle step of a simulated remote before it sleeps.
    pub fn spin_until(mut ready: impl FnMut() -> bool, mut relax: impl FnMut()) -> bool {
        let mut b = Backoff::new();
        loop {
            if ready() {
                return true;
            }
            if !b.snooze(&mut relax) {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snooze_spins_then_relaxes_then_is_spent() {
        let mut b = Backoff::new();
        let mut relaxed = 0;
        let mut pauses = 0;
        while b.snooze(|| relaxed += 1) {
            pauses += 1;
            assert!(pauses <= Backoff::PAUSES, "the budget is bounded");
        }
        assert_eq!(pauses, Backoff::PAUSES);
        assert_eq!(
            relaxed,
            Backoff::RELAX_STEPS,
            "relax only after the spin phase"
        );
        assert!(b.is_spent());
        assert!(!b.snooze(|| relaxed += 1), "a spent budget does not pause");
        assert_eq!(relaxed, Backoff::RELAX_STEPS);
        b.reset();
        assert!(!b.is_spent());
        assert!(b.snooze(|| relaxed += 1));
        assert_eq!(relaxed, Backoff::RELAX_STEPS, "a reset budget spins first");
    }

    #[test]
    fn spin_until_stops_when_ready_or_spent() {
        let mut polls = 0;
        assert!(Backoff::spin_until(
            || {
                polls += 1;
                polls == 3
            },
            || {}
        ));
        assert_eq!(polls, 3);
        let mut polls = 0;
        let mut relaxed = 0;
        assert!(!Backoff::spin_until(
            || {
                polls += 1;
                false
            },
            || relaxed += 1
        ));
        // One poll before each pause and one after the last.
        assert_eq!(polls, Backoff::PAUSES + 1);
        assert_eq!(relaxed, Backoff::RELAX_STEPS);
    }
}
