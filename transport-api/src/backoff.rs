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
//!
//! That price is what [`SpinBudget`] takes back: a waiter that keeps one learns, from how its
//! recent waits ended, how long its spin phase should be. Spinning helps only when the other
//! side runs on another core at the same time; when the two share a core (the scheduler placed
//! them so, or the machine has more busy threads than cores), every spin hint only delays the
//! moment the waiter gives the core away, and the other side answers only after it. Three
//! outcomes tell the cases apart:
//!
//! - **met while spinning** after `k` pauses: the other side runs beside us. The spin phase
//!   grows to at least `2k + MIN_SPINS` (never beyond [`Backoff::SPIN_STEPS`]).
//! - **met while relaxing** (after the spin phase, in the yields): spinning did nothing and
//!   giving way did it, the mark of a shared core. The spin phase halves (not below
//!   [`SpinBudget::MIN_SPINS`]).
//! - **not met** before the budget ran out (the waiter then sleeps): the other side was slow,
//!   which says nothing about cores. Unchanged.
//!
//! Every [`SpinBudget::PROBE_EVERY`]-th wait spins the whole [`Backoff::SPIN_STEPS`] whatever
//! was learned, so a spin phase shrunk while the sides shared a core grows back once they no
//! longer do. glibc's adaptive mutex (`PTHREAD_MUTEX_ADAPTIVE_NP`) learns its spin count per
//! mutex in the same spirit; its rule (move toward the spins last needed, growing when a spin
//! fails) suits a lock held for a while, not a hand-off to a thread that cannot run while we
//! spin, hence the rule above.

use crate::sync::{AtomicU32, Ordering};

/// A bounded spin-then-relax budget: [`Backoff::snooze`] pauses once per call until the spin
/// phase and [`Backoff::RELAX_STEPS`] relax calls have passed ([`Backoff::PAUSES`] pauses for
/// [`Backoff::new`]), then reports the budget spent.
///
/// The budget is small: at most [`Backoff::SPIN_STEPS`] pauses of one spin hint each (a few
/// microseconds on current cores, the caller looking again after each; [`Backoff::new`] spins
/// them all, [`Backoff::with_spins`], what a [`SpinBudget`] hands out, fewer), then
/// [`Backoff::RELAX_STEPS`] relax calls. It bounds how long a waiter keeps a core busy
/// whatever the peer does, so a waiter never starves the peer it waits for on a machine with
/// fewer cores than busy threads.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: u32,
    spins: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
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
        Self::with_spins(Self::SPIN_STEPS)
    }

    /// A fresh budget whose spin phase is `spins` pauses (at most [`Backoff::SPIN_STEPS`]),
    /// then [`Backoff::RELAX_STEPS`] relax calls as always.
    pub const fn with_spins(spins: u32) -> Self {
        let spins = if spins < Self::SPIN_STEPS {
            spins
        } else {
            Self::SPIN_STEPS
        };
        Backoff { step: 0, spins }
    }

    /// Pauses taken so far.
    pub const fn pauses(&self) -> u32 {
        self.step
    }

    /// Whether the waiter has given way: the spin phase is over and at least one pause has
    /// called the relax hook.
    pub const fn relaxing(&self) -> bool {
        self.step > self.spins
    }

    /// Start the budget over (after the awaited thing happened).
    pub fn reset(&mut self) {
        self.step = 0;
    }

    /// Whether the budget is spent: the caller should sleep now.
    pub fn is_spent(&self) -> bool {
        self.step >= self.spins + Self::RELAX_STEPS
    }

    /// One pause: a spin hint during the spin phase, then `relax`. Returns `false` (without
    /// pausing) once the budget is spent.
    pub fn snooze(&mut self, relax: impl FnOnce()) -> bool {
        if self.is_spent() {
            return false;
        }
        if self.step < self.spins {
            core::hint::spin_loop();
        } else {
            relax();
        }
        self.step += 1;
        true
    }
}

/// A spin phase learned from how its owner's recent waits ended (the module doc gives the
/// rule). One per waiting thread: a `ThreadParker` (feature `std`) keeps one for
/// [`crate::Wait::Completion`], and a simulated remote's thread one for its idle watch.
///
/// Its words are atomics only so that a parker holding one can be shared (`Sync`); each is
/// read and written with plain Relaxed loads and stores, no read-modify-write. Two threads
/// sharing one budget can lose each other's updates, which costs a wait a spin phase that is
/// not the learned one, nothing else: the budget is a hint, and every wait is still bounded
/// by [`Backoff`].
#[derive(Debug)]
pub struct SpinBudget {
    /// Pauses of the spin phase of the next wait that is not a probe.
    spins: AtomicU32,
    /// Waits begun, counting towards the next probe.
    waits: AtomicU32,
}

impl Default for SpinBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl SpinBudget {
    /// The shortest spin phase it learns (a handful of looks: a reply already on its way is
    /// still met without an OS wake-up).
    pub const MIN_SPINS: u32 = 4;
    /// One wait in this many spins the whole [`Backoff::SPIN_STEPS`] (a probe).
    pub const PROBE_EVERY: u32 = 8;

    /// A budget that starts at the whole [`Backoff::SPIN_STEPS`].
    pub fn new() -> Self {
        SpinBudget {
            spins: AtomicU32::new(Backoff::SPIN_STEPS),
            waits: AtomicU32::new(0),
        }
    }

    /// The spin phase of the next wait that is not a probe, in pauses.
    pub fn spins(&self) -> u32 {
        // Relaxed: a hint (see the type's doc).
        self.spins.load(Ordering::Relaxed)
    }

    /// The [`Backoff`] for the next wait: the learned spin phase, or the whole one for a probe.
    pub fn backoff(&self) -> Backoff {
        // Relaxed: a hint (see the type's doc); a load and a store, not a `fetch_add`.
        let w = self.waits.load(Ordering::Relaxed);
        self.waits.store(w.wrapping_add(1), Ordering::Relaxed);
        if w.is_multiple_of(Self::PROBE_EVERY) {
            Backoff::new()
        } else {
            Backoff::with_spins(self.spins())
        }
    }

    /// Learn from a wait that used `b` (from [`SpinBudget::backoff`]): `met` if what it waited
    /// for happened before the budget was spent (before the waiter slept).
    pub fn learn(&self, b: &Backoff, met: bool) {
        if !met {
            // The other side was slow: nothing learned about cores.
            return;
        }
        let cur = self.spins();
        let new = if b.relaxing() {
            // Spinning did nothing, giving way did it: a shared core.
            (cur / 2).max(Self::MIN_SPINS)
        } else {
            // Met while spinning, after `pauses()` pauses: room for twice that.
            let want = b
                .pauses()
                .saturating_mul(2)
                .saturating_add(Self::MIN_SPINS)
                .min(Backoff::SPIN_STEPS);
            cur.max(want)
        };
        if new != cur {
            // Relaxed: a hint (see the type's doc).
            self.spins.store(new, Ordering::Relaxed);
        }
    }

    /// Poll `ready` through one budget, pausing between polls; `true` as soon as it reports
    /// ready, `false` once the budget is spent (then sleep as before). Learns from the
    /// outcome. The idle watch of a simulated remote before it sleeps.
    pub fn spin_until(&self, mut ready: impl FnMut() -> bool, mut relax: impl FnMut()) -> bool {
        let mut b = self.backoff();
        let met = loop {
            if ready() {
                break true;
            }
            if !b.snooze(&mut relax) {
                break false;
            }
        };
        self.learn(&b, met);
        met
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
        let budget = SpinBudget::new();
        let mut polls = 0;
        assert!(budget.spin_until(
            || {
                polls += 1;
                polls == 3
            },
            || {}
        ));
        assert_eq!(polls, 3);
        let mut polls = 0;
        let mut relaxed = 0;
        assert!(!budget.spin_until(
            || {
                polls += 1;
                false
            },
            || relaxed += 1
        ));
        // One poll before each pause and one after the last.
        assert_eq!(polls, budget.spins() + Backoff::RELAX_STEPS + 1);
        assert_eq!(relaxed, Backoff::RELAX_STEPS);
    }

    #[test]
    fn a_shorter_spin_phase_relaxes_sooner() {
        let mut b = Backoff::with_spins(2);
        let mut relaxed = 0;
        let mut pauses = 0;
        while b.snooze(|| relaxed += 1) {
            pauses += 1;
            assert_eq!(b.relaxing(), pauses > 2);
        }
        assert_eq!(
            (pauses, relaxed),
            (2 + Backoff::RELAX_STEPS, Backoff::RELAX_STEPS)
        );
        assert_eq!(
            Backoff::with_spins(u32::MAX).spins,
            Backoff::SPIN_STEPS,
            "never longer than the default"
        );
    }

    /// Waits whose spins only ever end in the relax phase (the other side shares our core) are
    /// left with `MIN_SPINS`, except each probe; one met while spinning grows it back.
    #[test]
    fn a_shared_core_shrinks_the_spin_phase_and_a_met_spin_grows_it_back() {
        let budget = SpinBudget::new();
        // The other side answers only when we give way: at our first relax.
        let shared_core = |budget: &SpinBudget| {
            let gave_way = core::cell::Cell::new(false);
            let mut spun = 0;
            assert!(budget.spin_until(
                || {
                    spun += 1;
                    gave_way.get()
                },
                || gave_way.set(true)
            ));
            spun - 2 // the polls before the first relax, less the one before the first pause
        };
        let mut spun = Vec::new();
        for _ in 0..3 * SpinBudget::PROBE_EVERY {
            spun.push(shared_core(&budget));
        }
        assert_eq!(budget.spins(), SpinBudget::MIN_SPINS);
        let probes = spun.iter().filter(|&&n| n == Backoff::SPIN_STEPS).count();
        assert_eq!(probes, 3, "one probe every PROBE_EVERY waits: {spun:?}");
        let tail = &spun[SpinBudget::PROBE_EVERY as usize + 1..];
        assert!(
            tail.iter()
                .all(|&n| n == SpinBudget::MIN_SPINS || n == Backoff::SPIN_STEPS),
            "after the first probe, shrunk to the minimum: {spun:?}"
        );
        // The two sides on two cores again: a probe meets the answer after 40 pauses.
        while !budget
            .waits
            .load(Ordering::Relaxed)
            .is_multiple_of(SpinBudget::PROBE_EVERY)
        {
            shared_core(&budget);
        }
        let mut polls = 0;
        assert!(budget.spin_until(
            || {
                polls += 1;
                polls > 40
            },
            || panic!("met while spinning")
        ));
        assert_eq!(budget.spins(), 2 * 40 + SpinBudget::MIN_SPINS);
        // A wait that is not met says nothing about cores.
        assert!(!budget.spin_until(|| false, || {}));
        assert_eq!(budget.spins(), 2 * 40 + SpinBudget::MIN_SPINS);
    }
}
