//! A short, bounded spin before a thread or CPU goes to sleep: what [`crate::Wait::Completion`]
//! does before it parks, and what a simulated remote does before it sleeps when idle. An OS
//! wake-up costs microseconds; a peer that answers within a few microseconds is met spinning.
//!
//! The shape is crossbeam-utils' `Backoff`: exponentially longer runs of
//! [`core::hint::spin_loop`], then a few calls of a relax hook (`std::thread::yield_now` where
//! there is a scheduler; another spin hint on bare metal), then the caller sleeps as before.

/// Bounded exponential backoff: [`Backoff::snooze`] pauses a little longer each time until
/// [`Backoff::PAUSES`] pauses have passed, then reports the budget spent.
///
/// The budget is fixed and small: spin runs of 1, 2, 4 … 64 hints (127 in all, a few
/// microseconds on current cores), then [`Backoff::RELAX_STEPS`] relax calls. It bounds how long
/// a waiter keeps a core busy whatever the peer does, so a waiter never starves the peer it
/// waits for on a machine with fewer cores than busy threads.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    /// Pauses that spin (pause `k` spins `2^k` hints).
    pub const SPIN_STEPS: u32 = 7;
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

    /// One pause: a spin run during the spin phase, then `relax`. Returns `false` (without
    /// pausing) once the budget is spent.
    pub fn snooze(&mut self, relax: impl FnOnce()) -> bool {
        if self.is_spent() {
            return false;
        }
        if self.step < Self::SPIN_STEPS {
            for _ in 0..1u32 << self.step {
                core::hint::spin_loop();
            }
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
