//! Waiting for a transfer: poll, spin-then-yield, or completion (a short [`Backoff`], then a
//! waker and a park), all bounded by a [`Deadline`]. [`crate::call`], the whole send → wait →
//! fetch → mark_txdone cycle, is built on it with [`crate::Transfer`].

use core::task::Waker;
use core::time::Duration;

use crate::backoff::{Backoff, SpinBudget};
use crate::clock::{Clock, Deadline};
use crate::transport::{Ticket, Transport};
use crate::{Error, Result};

/// Blocks the current execution context until woken or a timeout passes. The std implementation
/// is `ThreadParker` (feature `std`); on bare metal, a WFI/WFE loop with an interrupt-driven waker.
pub trait Parker {
    /// A waker that unblocks [`Parker::park_timeout`].
    fn waker(&self) -> &Waker;
    /// Block for at most `timeout` (spurious returns are fine).
    fn park_timeout(&self, timeout: Duration);
    /// Give way briefly without blocking, in the spin phase before [`Wait::Completion`] parks,
    /// after its spin runs ([`Backoff::RELAX_STEPS`] calls per wait at most). The default is a
    /// spin hint; `ThreadParker` yields to the scheduler.
    fn relax(&self) {
        core::hint::spin_loop();
    }
    /// The [`SpinBudget`] this parker's waits learn their spin phase from, if it keeps one
    /// (`ThreadParker` does): [`Wait::Completion`] then spins as long as the budget says and
    /// tells it how the wait ended. The default keeps none: every wait spins the whole
    /// [`Backoff::SPIN_STEPS`] (right for a core that never shares its CPU with the side it
    /// waits for, as a driver waiting for firmware on its own core).
    fn spin_budget(&self) -> Option<&SpinBudget> {
        None
    }
}

/// How to wait for a transfer: the one waiting vocabulary of every fwipc API (the transports'
/// [`wait_done`] and [`crate::call`], and the typed layers above them, such as an SCMI agent's
/// configuration). Its closures and parkers are `Sync`, so a `Wait<'static>` can live in the
/// configuration of an object shared between threads or CPUs.
#[derive(Clone, Copy)]
pub enum Wait<'a> {
    /// Busy-poll `poll_done` (atomic context, no scheduler).
    Poll,
    /// Poll `spins` times, then call `relax` between polls (`std::thread::yield_now`, WFE...).
    SpinThenYield {
        /// Busy polls before relaxing.
        spins: u32,
        /// Called between polls after the spin phase.
        relax: &'a (dyn Fn() + Sync),
    },
    /// Poll through one short [`Backoff`] (spin runs, then [`Parker::relax`]: a few
    /// microseconds, bounded, no scheduler wake-up when the remote answers within it), then
    /// register the parker's waker with the transport and park until woken. Falls back to
    /// short parks when the transport cannot wake.
    Completion(&'a (dyn Parker + Sync)),
}

impl core::fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Wait::Poll => f.write_str("Poll"),
            Wait::SpinThenYield { spins, .. } => write!(f, "SpinThenYield({spins})"),
            Wait::Completion(_) => f.write_str("Completion"),
        }
    }
}

impl Wait<'_> {
    /// The pause between two polls of something that cannot wake the caller (a transfer on a
    /// transport without wakers, a delayed response another context delivers): `Poll` spins once;
    /// `SpinThenYield` spins until `polls` exceeds `spins`, then relaxes; `Completion` parks for at
    /// most `nap`. `polls` counts the polls made so far.
    pub fn pause(&self, polls: u32, nap: Duration) {
        match *self {
            Wait::Poll => core::hint::spin_loop(),
            Wait::SpinThenYield { spins, relax } if polls > spins => relax(),
            Wait::SpinThenYield { .. } => core::hint::spin_loop(),
            Wait::Completion(parker) => parker.park_timeout(nap),
        }
    }
}

/// Wait until `ticket` is done or `deadline` passes. Does not consume the ticket.
pub fn wait_done<T: Transport + ?Sized>(
    t: &T,
    ticket: &Ticket,
    clock: &(impl Clock + ?Sized),
    deadline: Deadline,
    wait: Wait<'_>,
) -> Result<()> {
    let done = wait_until(
        || t.poll_done(ticket),
        |w| t.register_waker(ticket, w),
        |on| t.spinning(ticket, on),
        clock,
        deadline,
        wait,
    )?;
    if done {
        Ok(())
    } else {
        Err(Error::Timeout)
    }
}

/// The one waiting loop behind [`wait_done`], for anything that can be polled: call `poll` until
/// it reports done (`Ok(true)`) or fails, or until `deadline` passes (`Ok(false)`), pausing
/// between polls as `wait` says. With [`Wait::Completion`], `poll` is first retried through one
/// [`Backoff`] (the deadline still checked before each pause); then `register` is offered the
/// parker's waker once; it returns whether it will wake it (if not, the waiter polls in short
/// naps).
///
/// `spinning` is told when the waiter starts spinning on `poll` (`true`, before the first
/// poll: a remote that answers between the caller's send and its first look already finds the
/// hint, so its answer raises no interrupt for the spinner to pull back; a first poll that is
/// done costs one pair of hints) and when it stops (`false`: before it relaxes, registers or
/// parks, and when the wait ends while it spins), in pairs: [`Wait::Poll`] spins for the whole wait,
/// [`Wait::SpinThenYield`] for its `spins`, [`Wait::Completion`] for its [`Backoff`]'s spin
/// phase. [`wait_done`] passes it on as [`Transport::spinning`]; pass `|_| {}` where nothing
/// listens. Typed layers over a split-phase call (a FastRPC session, for one) wait with this.
pub fn wait_until<E>(
    mut poll: impl FnMut() -> core::result::Result<bool, E>,
    mut register: impl FnMut(&Waker) -> bool,
    spinning: impl FnMut(bool),
    clock: &(impl Clock + ?Sized),
    deadline: Deadline,
    wait: Wait<'_>,
) -> core::result::Result<bool, E> {
    let mut polls: u32 = 0;
    let mut registered = false;
    let mut offered = false;
    // A parker's learned spin phase (`Parker::spin_budget`), told below how the wait ended.
    let budget = match wait {
        Wait::Completion(parker) => parker.spin_budget(),
        _ => None,
    };
    let mut backoff = budget.map_or_else(Backoff::new, SpinBudget::backoff);
    // Told `false` when dropped while on: every return below ends a spin.
    let mut hint = SpinHint {
        tell: spinning,
        on: false,
    };
    // On before the first poll for every wait that spins at all.
    hint.set(match wait {
        Wait::SpinThenYield { spins, .. } => spins > 0,
        Wait::Poll | Wait::Completion(_) => true,
    });
    loop {
        if poll()? {
            if let Some(b) = budget {
                // Met before the waker was offered: while spinning or relaxing.
                b.learn(&backoff, !offered);
            }
            return Ok(true);
        }
        if deadline.expired(clock) {
            return Ok(false);
        }
        polls = polls.saturating_add(1);
        match wait {
            Wait::Poll => {
                hint.set(true);
                wait.pause(polls, Duration::ZERO);
            }
            Wait::SpinThenYield { spins, .. } => {
                // Off before the first relax: a waiter idling in WFE relies on the interrupt.
                hint.set(polls <= spins);
                wait.pause(polls, Duration::ZERO);
            }
            Wait::Completion(parker) => {
                if !offered {
                    // Spin first: a completion within the budget costs neither side an OS
                    // wake-up. Bounded, so a remote that never answers costs a few
                    // microseconds, not a core.
                    hint.set(true);
                    if backoff.snooze(|| parker.relax()) {
                        continue;
                    }
                    // Off before the waker is offered: the transport asks for the interrupt
                    // again, and takes what arrived while it did not.
                    hint.set(false);
                    offered = true;
                    registered = register(parker.waker());
                    // Re-check after registering: a completion between our poll and the
                    // registration would otherwise be a lost wake-up.
                    if registered {
                        continue;
                    }
                }
                // A waiter that will be woken sleeps until the deadline; one that will not
                // polls in short naps.
                let nap = if registered {
                    deadline.remaining(clock)
                } else {
                    Duration::from_micros(50)
                };
                parker.park_timeout(nap.min(Duration::from_millis(100)));
            }
        }
    }
}

/// The `spinning` callback of [`wait_until`], told each change once, and `false` when dropped
/// while on.
struct SpinHint<F: FnMut(bool)> {
    tell: F,
    on: bool,
}

impl<F: FnMut(bool)> SpinHint<F> {
    fn set(&mut self, on: bool) {
        if self.on != on {
            self.on = on;
            (self.tell)(on);
        }
    }
}

impl<F: FnMut(bool)> Drop for SpinHint<F> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// The std [`Parker`]: parks the thread that created it, and keeps the [`SpinBudget`] its
/// waits learn from (a thread that shares a core with the side it waits for spins less).
#[cfg(feature = "std")]
pub struct ThreadParker {
    waker: Waker,
    spin: SpinBudget,
}

#[cfg(feature = "std")]
struct Unparker(std::thread::Thread);

#[cfg(feature = "std")]
impl std::task::Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(feature = "std")]
impl ThreadParker {
    /// A parker for the current thread. Create it once per thread and reuse it: this allocates.
    pub fn new() -> Self {
        ThreadParker {
            waker: Waker::from(std::sync::Arc::new(Unparker(std::thread::current()))),
            spin: SpinBudget::new(),
        }
    }
}

#[cfg(feature = "std")]
impl Default for ThreadParker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl Parker for ThreadParker {
    fn waker(&self) -> &Waker {
        &self.waker
    }
    fn park_timeout(&self, timeout: Duration) {
        std::thread::park_timeout(timeout);
    }
    fn relax(&self) {
        std::thread::yield_now();
    }
    fn spin_budget(&self) -> Option<&SpinBudget> {
        Some(&self.spin)
    }
}

/// `std::thread::yield_now`, for [`Wait::SpinThenYield`].
#[cfg(feature = "std")]
pub fn yield_now() {
    std::thread::yield_now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn pause_spins_then_relaxes() {
        let relaxed = AtomicU32::new(0);
        // Relaxed: a single-threaded count.
        let relax = || {
            relaxed.fetch_add(1, Ordering::Relaxed);
        };
        let wait = Wait::SpinThenYield {
            spins: 2,
            relax: &relax,
        };
        for polls in 1..=5 {
            wait.pause(polls, Duration::ZERO);
        }
        // Polls 1 and 2 spin; 3, 4 and 5 relax.
        assert_eq!(relaxed.load(Ordering::Relaxed), 3);
        Wait::Poll.pause(u32::MAX, Duration::ZERO);
    }

    struct Napper {
        naps: std::sync::Mutex<Vec<Duration>>,
        relaxed: AtomicU32,
        waker: Waker,
    }
    impl Napper {
        fn new() -> Self {
            Napper {
                naps: Default::default(),
                relaxed: AtomicU32::new(0),
                waker: Waker::noop().clone(),
            }
        }
    }
    impl Parker for Napper {
        fn waker(&self) -> &Waker {
            &self.waker
        }
        fn park_timeout(&self, timeout: Duration) {
            self.naps.lock().unwrap().push(timeout);
        }
        fn relax(&self) {
            // Relaxed: a single-threaded count.
            self.relaxed.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn pause_parks_a_completion_waiter_for_the_nap() {
        let p = Napper::new();
        Wait::Completion(&p).pause(1, Duration::from_micros(50));
        assert_eq!(*p.naps.lock().unwrap(), [Duration::from_micros(50)]);
    }

    #[test]
    fn wait_until_reports_done_the_deadline_and_errors() {
        let clock = crate::ManualClock::new();
        let deadline = Deadline::after(&clock, Duration::from_millis(10));
        // Done on the third poll.
        let mut polls = 0;
        let r: core::result::Result<bool, ()> = wait_until(
            || {
                polls += 1;
                Ok(polls == 3)
            },
            |_| false,
            |_| {},
            &clock,
            deadline,
            Wait::Poll,
        );
        assert_eq!((r, polls), (Ok(true), 3));
        // Never done: `Ok(false)` once the deadline passes.
        let mut polls = 0;
        let r: core::result::Result<bool, ()> = wait_until(
            || {
                polls += 1;
                clock.advance(Duration::from_millis(4));
                Ok(false)
            },
            |_| false,
            |_| {},
            &clock,
            deadline,
            Wait::Poll,
        );
        assert_eq!((r, polls), (Ok(false), 3));
        // A failed poll ends the wait with its error.
        let r = wait_until(
            || Err(7u8),
            |_| false,
            |_| {},
            &clock,
            Deadline::never(),
            Wait::Poll,
        );
        assert_eq!(r, Err(7));
    }

    /// A `Wait::Completion` wait on `p` whose poll `n` (from 1) reports `done(n)` and whose
    /// transport answers `wakes` to the waker offer; returns the result, the polls and the offers.
    fn completion_wait(
        p: &Napper,
        clock: &crate::ManualClock,
        deadline: Deadline,
        wakes: bool,
        mut done: impl FnMut(u32) -> bool,
    ) -> (core::result::Result<bool, ()>, u32, u32) {
        let (mut polls, mut offers) = (0, 0);
        let r = wait_until(
            || {
                polls += 1;
                Ok(done(polls))
            },
            |_| {
                offers += 1;
                wakes
            },
            |_| {},
            clock,
            deadline,
            Wait::Completion(p),
        );
        (r, polls, offers)
    }

    #[test]
    fn wait_until_offers_the_waker_once_and_naps_when_refused() {
        let p = Napper::new();
        let clock = crate::ManualClock::new();
        // Done on the fourth poll after the spin phase's.
        let (r, _, offers) = completion_wait(&p, &clock, Deadline::never(), false, |n| {
            n == Backoff::PAUSES + 4
        });
        assert_eq!(r, Ok(true));
        assert_eq!(offers, 1, "the waker is offered once");
        // A waiter that will not be woken polls in short naps.
        assert_eq!(*p.naps.lock().unwrap(), [Duration::from_micros(50); 3]);
        assert_eq!(p.relaxed.load(Ordering::Relaxed), Backoff::RELAX_STEPS);
    }

    /// A parker that keeps a [`SpinBudget`] and whose `relax` lets the other side answer: the
    /// two share a core.
    struct SharedCore {
        budget: SpinBudget,
        gave_way: core::sync::atomic::AtomicBool,
    }
    impl SharedCore {
        fn gave_way(&self) -> bool {
            // Relaxed: one thread.
            self.gave_way.load(Ordering::Relaxed)
        }
    }
    impl Parker for SharedCore {
        fn waker(&self) -> &Waker {
            Waker::noop()
        }
        fn park_timeout(&self, _timeout: Duration) {}
        fn relax(&self) {
            // Relaxed: one thread.
            self.gave_way.store(true, Ordering::Relaxed);
        }
        fn spin_budget(&self) -> Option<&SpinBudget> {
            Some(&self.budget)
        }
    }

    /// `Wait::Completion` tells the parker's budget how each wait ended: waits met only once the
    /// waiter gives way shrink the spin phase to `SpinBudget::MIN_SPINS` (probes excepted).
    #[test]
    fn completion_learns_its_spin_phase_from_the_parker() {
        let p = SharedCore {
            budget: SpinBudget::new(),
            gave_way: Default::default(),
        };
        let clock = crate::ManualClock::new();
        let mut polls_per_wait = Vec::new();
        for _ in 0..2 * SpinBudget::PROBE_EVERY {
            // Relaxed: one thread.
            p.gave_way.store(false, Ordering::Relaxed);
            let mut polls = 0;
            let r: core::result::Result<bool, ()> = wait_until(
                || {
                    polls += 1;
                    Ok(p.gave_way())
                },
                |_| panic!("met before the waker is offered"),
                |_| {},
                &clock,
                Deadline::never(),
                Wait::Completion(&p),
            );
            assert_eq!(r, Ok(true));
            polls_per_wait.push(polls);
        }
        // The first wait (a probe) spins the whole phase: a poll before each spin pause, one
        // before the first relax and one after it.
        assert_eq!(polls_per_wait[0], Backoff::SPIN_STEPS + 2);
        assert_eq!(p.budget.spins(), SpinBudget::MIN_SPINS);
        let last = *polls_per_wait.last().unwrap();
        assert_eq!(last, SpinBudget::MIN_SPINS + 2, "{polls_per_wait:?}");
    }

    #[test]
    fn completion_spins_before_it_registers_or_parks() {
        let p = Napper::new();
        let clock = crate::ManualClock::new();
        // Done within the spin phase: no waker offered, no park.
        let (r, _, offers) = completion_wait(&p, &clock, Deadline::never(), true, |n| n == 3);
        assert_eq!((r, offers), (Ok(true), 0));
        assert!(p.naps.lock().unwrap().is_empty());
        // The spin phase is bounded: a remote that never answers gets the waker after
        // `Backoff::PAUSES` pauses, and a waiter that will be woken parks.
        let (r, _, offers) = completion_wait(&p, &clock, Deadline::never(), true, |n| {
            n == Backoff::PAUSES + 3
        });
        assert_eq!((r, offers), (Ok(true), 1));
        // Poll PAUSES + 1 offers the waker, PAUSES + 2 re-checks and parks, PAUSES + 3 is done.
        assert_eq!(p.naps.lock().unwrap().len(), 1);
    }

    /// The kinds of wait of [`hint_events`].
    enum Kind {
        Poll,
        SpinThenYield(u32),
        Completion,
    }

    /// The events of one `wait_until` of `kind`: `p` a poll, `+`/`-` the spinning hint, `o` the
    /// waker offered (and accepted), `r` a relax of `SpinThenYield`, `n` a park; the poll
    /// numbered `done` (from 1) is done.
    fn hint_events(kind: Kind, done: u32) -> String {
        let log = std::sync::Mutex::new(String::new());
        let ev = |c: char| log.lock().unwrap().push(c);
        let relax = || ev('r');
        let napper = Napper::new();
        let wait = match kind {
            Kind::Poll => Wait::Poll,
            Kind::SpinThenYield(spins) => Wait::SpinThenYield {
                spins,
                relax: &relax,
            },
            Kind::Completion => Wait::Completion(&napper),
        };
        let polls = core::cell::Cell::new(0);
        let clock = crate::ManualClock::new();
        let r: core::result::Result<bool, ()> = wait_until(
            || {
                ev('p');
                polls.set(polls.get() + 1);
                Ok(polls.get() == done)
            },
            |_| {
                ev('o');
                true
            },
            |on| ev(if on { '+' } else { '-' }),
            &clock,
            Deadline::never(),
            wait,
        );
        assert_eq!(r, Ok(true));
        let parks = napper.naps.lock().unwrap().len();
        log.into_inner().unwrap() + &"n".repeat(parks)
    }

    /// The spinning hint is on while the waiter spins and off before it relaxes, offers its
    /// waker or parks, and when the wait ends: in pairs, for every kind of wait.
    #[test]
    fn the_spinning_hint_brackets_the_spin() {
        // On before the first poll (a reply that comes before it finds the hint).
        assert_eq!(hint_events(Kind::Poll, 3), "+ppp-");
        assert_eq!(hint_events(Kind::Poll, 1), "+p-", "done at once: one pair");
        assert_eq!(hint_events(Kind::SpinThenYield(2), 5), "+ppp-rprp");
        assert_eq!(
            hint_events(Kind::SpinThenYield(0), 3),
            "prprp",
            "no spins: no hint"
        );
        assert_eq!(hint_events(Kind::Completion, 3), "+ppp-");
        // Past the spin phase: off before the offer, and not on again (the park is counted last).
        let spin = "p".repeat(Backoff::PAUSES as usize + 1);
        assert_eq!(
            hint_events(Kind::Completion, Backoff::PAUSES + 3),
            format!("+{spin}-oppn")
        );
    }

    #[test]
    fn completion_honours_the_deadline_while_spinning() {
        let p = Napper::new();
        let clock = crate::ManualClock::new();
        let deadline = Deadline::after(&clock, Duration::from_millis(10));
        let (r, polls, offers) = completion_wait(&p, &clock, deadline, true, |_| {
            clock.advance(Duration::from_millis(4));
            false
        });
        // Expired after the third poll, inside the spin phase: neither registered nor parked.
        assert_eq!((r, polls, offers), (Ok(false), 3, 0));
        assert!(p.naps.lock().unwrap().is_empty());
    }
}
