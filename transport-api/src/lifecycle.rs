//! Channel lifecycle: a users refcount that doubles as the ready flag (the Linux virtio-scmi
//! scheme), with a shutdown that waits for the last user, bounded by a deadline.
//!
//! `users == 0` means not ready. Setup sets it to 1 (the owner's reference). Every operation
//! first acquires (an increment, undone when the count was zero or shutdown has begun) and
//! releases when done. Shutdown drops the owner's reference once, then waits until the count
//! reaches zero or the deadline passes.

use core::convert::Infallible;

use crate::clock::{Clock, Deadline};
use crate::sync::{AtomicBool, AtomicUsize, Ordering};
use crate::wait::{wait_until, Wait};
use crate::{Error, Result};

/// Users refcount + ready flag of one channel.
#[derive(Debug)]
pub struct Lifecycle {
    users: AtomicUsize,
    shutting_down: AtomicBool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A ready channel with the owner's reference.
    pub fn new() -> Self {
        Lifecycle {
            users: AtomicUsize::new(1),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Whether new users are admitted.
    pub fn is_ready(&self) -> bool {
        // Acquire: pairs with the Release in `shutdown`, so a caller that sees "not ready" also
        // sees the state the shutting-down thread published before it.
        !self.shutting_down.load(Ordering::Acquire) && self.users.load(Ordering::Acquire) > 0
    }

    /// Live users (including the owner's reference while ready).
    pub fn users(&self) -> usize {
        self.users.load(Ordering::Acquire)
    }

    /// Become a user: `Shutdown` once shutdown has begun.
    #[inline]
    pub fn acquire(&self) -> Result<UserGuard<'_>> {
        // Count ourselves in first, then look at the flag (one read-modify-write, no retry
        // loop). Acquire: our use of the channel happens after the setup that published it; and
        // every read-modify-write of `users` after `begin_shutdown`'s Release decrement is in
        // its release sequence, so an increment that comes after that decrement sees the flag
        // below, and one that comes before it is seen by `wait_idle` until it is undone.
        let before = self.users.fetch_add(1, Ordering::Acquire);
        // Acquire: see `is_ready`. `before == 0`: the owner's reference is gone (shutdown ran).
        if before == 0 || self.shutting_down.load(Ordering::Acquire) {
            // Release: as a user leaving (see `UserGuard`); we touched nothing of the channel.
            self.users.fetch_sub(1, Ordering::Release);
            return Err(Error::Shutdown);
        }
        Ok(UserGuard { lc: self })
    }

    /// Admission without a count, for an operation that runs wholly under a lock of the
    /// backend's that its shutdown takes after [`Lifecycle::begin_shutdown`] and before it tears
    /// down what that lock guards: call it with the lock held; `Shutdown` once shutdown has
    /// begun. No read-modify-write: the lock is the fence. An operation that holds the lock
    /// when shutdown asks for it finishes before the teardown; one that takes it after
    /// shutdown did sees the flag. [`Lifecycle::wait_idle`] does not wait for such operations
    /// (they are not users), so the teardown must take that lock.
    #[inline]
    pub fn admit_locked(&self) -> Result<()> {
        // Relaxed: the caller's lock orders the flag. `begin_shutdown`'s swap comes before
        // shutdown takes the lock, so a holder of the lock after shutdown's release of it sees
        // the flag (happens-before); a holder before it may see either, and the teardown that
        // follows ends what it started.
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    /// Stop admitting users and drop the owner's reference. Returns `false` if shutdown had
    /// already begun (it happens once).
    pub fn begin_shutdown(&self) -> bool {
        // AcqRel: only one thread wins; Release publishes "shutting down" to `acquire`.
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return false;
        }
        // Release: our last accesses as the owner happen-before whoever sees zero.
        self.users.fetch_sub(1, Ordering::Release);
        true
    }

    /// Wait until every user has released, pausing between looks as `wait` says; `Timeout` at
    /// the deadline (the Linux driver waits without bound; we do not). A leaving user wakes no
    /// one, so [`Wait::Completion`] parks in short naps between looks.
    pub fn wait_idle(
        &self,
        clock: &(impl Clock + ?Sized),
        deadline: Deadline,
        wait: Wait<'_>,
    ) -> Result<()> {
        let idle = wait_until(
            // Acquire: pairs with the users' Release decrements, so teardown after this sees all
            // their effects.
            || Ok::<bool, Infallible>(self.users.load(Ordering::Acquire) == 0),
            |_| false,
            |_| {},
            clock,
            deadline,
            wait,
        );
        match idle {
            Ok(true) => Ok(()),
            Ok(false) => {
                log::warn!(
                    "shutdown: {} user(s) still active at deadline",
                    self.users()
                );
                Err(Error::Timeout)
            }
            Err(never) => match never {},
        }
    }

    /// The teardown after [`Lifecycle::begin_shutdown`], in the one order every backend needs:
    /// end what is in flight (`end_in_flight`, e.g. the transfer table's `fail_all`), wait for
    /// the users to leave ([`Lifecycle::wait_idle`]), then end what is in flight once more. The
    /// second pass is not redundant: a user admitted just before `begin_shutdown` may start its
    /// transfer after the first pass, and its waiter would otherwise run into its own timeout
    /// instead of learning of the shutdown. Once every user is gone, none can start any more, so
    /// nothing is left in flight after the second pass. The result is the wait's.
    pub fn drain(
        &self,
        clock: &(impl Clock + ?Sized),
        deadline: Deadline,
        wait: Wait<'_>,
        mut end_in_flight: impl FnMut(),
    ) -> Result<()> {
        end_in_flight();
        let idle = self.wait_idle(clock, deadline, wait);
        end_in_flight();
        idle
    }

    /// `begin_shutdown` + `wait_idle`.
    pub fn shutdown(
        &self,
        clock: &(impl Clock + ?Sized),
        deadline: Deadline,
        wait: Wait<'_>,
    ) -> Result<()> {
        self.begin_shutdown();
        self.wait_idle(clock, deadline, wait)
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// One user's reference; released on drop.
#[derive(Debug)]
pub struct UserGuard<'a> {
    lc: &'a Lifecycle,
}

impl Drop for UserGuard<'_> {
    fn drop(&mut self) {
        // Release: this user's channel accesses happen-before the shutdown waiter's Acquire load.
        self.lc.users.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use core::time::Duration;

    #[test]
    fn acquire_fails_after_shutdown() {
        let lc = Lifecycle::new();
        let g = lc.acquire().unwrap();
        assert_eq!(lc.users(), 2);
        assert!(lc.begin_shutdown());
        assert!(!lc.begin_shutdown(), "only once");
        assert_eq!(lc.acquire().err(), Some(Error::Shutdown));
        assert!(!lc.is_ready());
        drop(g);
        let c = ManualClock::new();
        lc.wait_idle(&c, Deadline::after(&c, Duration::ZERO), Wait::Poll)
            .unwrap();
    }

    #[test]
    fn admit_locked_counts_nobody_and_refuses_after_shutdown() {
        let lc = Lifecycle::new();
        assert_eq!(lc.admit_locked(), Ok(()));
        assert_eq!(lc.users(), 1, "no user counted");
        assert!(lc.begin_shutdown());
        assert_eq!(lc.admit_locked(), Err(Error::Shutdown));
        assert_eq!(lc.users(), 0);
    }

    #[test]
    fn shutdown_is_bounded() {
        let lc = Lifecycle::new();
        let _g = lc.acquire().unwrap();
        let c = ManualClock::new();
        let d = Deadline::after(&c, Duration::from_millis(5));
        let relax = || c.advance(Duration::from_millis(1));
        let r = lc.shutdown(
            &c,
            d,
            Wait::SpinThenYield {
                spins: 0,
                relax: &relax,
            },
        );
        assert_eq!(r, Err(Error::Timeout));
        // One look per millisecond: the deadline ended the wait, not a spin budget.
        assert_eq!(c.now(), crate::Instant(5_000_000));
    }

    #[test]
    fn drain_ends_in_flight_before_and_after_the_wait() {
        let lc = Lifecycle::new();
        let user = lc.acquire().unwrap();
        assert!(lc.begin_shutdown());
        let c = ManualClock::new();
        let d = Deadline::after(&c, Duration::from_millis(5));
        // The user leaves during the wait; each pass records the users it saw.
        let user = spin::Mutex::new(Some(user));
        let relax = || {
            drop(user.lock().take());
            c.advance(Duration::from_millis(1));
        };
        let mut seen = [usize::MAX; 3];
        let mut passes = 0;
        let r = lc.drain(
            &c,
            d,
            Wait::SpinThenYield {
                spins: 0,
                relax: &relax,
            },
            || {
                seen[passes] = lc.users();
                passes += 1;
            },
        );
        assert_eq!(r, Ok(()));
        assert_eq!(passes, 2);
        assert_eq!(
            seen[..2],
            [1, 0],
            "the second pass runs after the last user left"
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn shutdown_waits_for_last_user() {
        let lc = std::sync::Arc::new(Lifecycle::new());
        let g_lc = lc.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _g = g_lc.acquire().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        });
        rx.recv().unwrap();
        let c = crate::StdClock::new();
        let start = std::time::Instant::now();
        let parker = crate::ThreadParker::new();
        lc.shutdown(
            &c,
            Deadline::after(&c, Duration::from_secs(5)),
            Wait::Completion(&parker),
        )
        .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
        t.join().unwrap();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// A user racing shutdown either gets in (and shutdown sees it leave) or is refused; the
    /// count never goes negative and ends at zero.
    #[test]
    fn acquire_races_shutdown() {
        loom::model(|| {
            let lc = loom::sync::Arc::new(Lifecycle::new());
            let l2 = lc.clone();
            let t = loom::thread::spawn(move || {
                if let Ok(g) = l2.acquire() {
                    drop(g);
                }
            });
            lc.begin_shutdown();
            t.join().unwrap();
            assert_eq!(lc.users(), 0);
            assert!(lc.acquire().is_err());
        });
    }

    /// An operation admitted under a lock racing shutdown and a teardown under that lock: one
    /// that gets in sees the channel as it was before the teardown, never after (the channel, a
    /// value under that lock which the teardown changes), and one that comes after the teardown
    /// is refused.
    #[test]
    fn no_locked_admission_after_the_teardown() {
        loom::model(|| {
            let lc = loom::sync::Arc::new(Lifecycle::new());
            let channel = loom::sync::Arc::new(crate::sync::Lock::new(0u32));
            let (l2, c2) = (lc.clone(), channel.clone());
            let t = loom::thread::spawn(move || {
                let ch = c2.lock();
                if l2.admit_locked().is_ok() {
                    assert_eq!(*ch, 0, "admitted after the teardown");
                } else {
                    assert!(l2.is_shutting_down());
                }
            });
            lc.begin_shutdown();
            // The teardown, under the lock.
            *channel.lock() = 1;
            t.join().unwrap();
        });
    }

    /// A user racing shutdown and the teardown after it: a user that gets in uses the channel
    /// before the waiter sees zero, never after (the channel, a `loom` cell: a use the
    /// orderings do not put before the teardown is reported as a data race).
    #[test]
    fn no_user_gets_in_after_the_wait() {
        loom::model(|| {
            let lc = loom::sync::Arc::new(Lifecycle::new());
            let channel = loom::sync::Arc::new(loom::cell::UnsafeCell::new(0u32));
            let (l2, c2) = (lc.clone(), channel.clone());
            let t = loom::thread::spawn(move || {
                if let Ok(g) = l2.acquire() {
                    // SAFETY: a loom cell; loom checks this read against the teardown's write.
                    c2.with(|v| assert_eq!(unsafe { *v }, 0, "used after the teardown"));
                    drop(g);
                }
            });
            lc.begin_shutdown();
            while lc.users() != 0 {
                loom::thread::yield_now();
            }
            // The teardown.
            // SAFETY: a loom cell; loom checks this write against every admitted user's read.
            channel.with_mut(|v| unsafe { *v = 1 });
            t.join().unwrap();
        });
    }
}
