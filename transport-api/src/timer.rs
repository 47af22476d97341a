//! The optional timer hook of fwipc's futures. Every future of the fwipc crates checks its
//! deadline only when it is polled: the libraries are `no_std` and have no timer, so nothing
//! wakes a pending future *at* its deadline. [`with_timer`] wraps any of them so that, while it is
//! pending, the caller's [`Timer`] (an executor's timer, a hardware alarm) is asked to wake the
//! task at the deadline: the poll that times the future out then comes on time.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::clock::{Deadline, Instant};

/// Wakes a task at an instant: an executor's timer, a hardware alarm.
pub trait Timer {
    /// Wake `waker` once `at` has passed on the [`Clock`](crate::Clock) the deadline was taken
    /// from. An early or a repeated wake is harmless (the future is polled, finds nothing to do
    /// and asks again).
    fn wake_at(&self, at: Instant, waker: &Waker);
}

/// `fut` with its deadline armed on a [`Timer`] while it is pending (see [`with_timer`]).
#[must_use = "futures do nothing unless polled"]
pub struct WithTimer<'t, F, T: ?Sized> {
    fut: F,
    timer: &'t T,
    at: Instant,
    /// The waker the timer was last asked to wake (re-armed when the task's waker changes).
    armed: Option<Waker>,
}

impl<F, T: ?Sized> core::fmt::Debug for WithTimer<'_, F, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WithTimer")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// Wrap `fut` (a future of any fwipc crate, or anything else that gives up at `deadline` when
/// polled) so that each time it is left pending, `timer` is asked to wake the task at
/// `deadline` (once per waker). Pass the deadline the future itself uses or a later one: an
/// earlier one would wake the task before the future gives up, and the timer is not asked again
/// for the same waker. `fut` must be `Unpin`; pin a future that is not with `core::pin::pin!` and
/// pass the pinned reference.
pub fn with_timer<F: Future + Unpin, T: Timer + ?Sized>(
    fut: F,
    timer: &T,
    deadline: Deadline,
) -> WithTimer<'_, F, T> {
    WithTimer {
        fut,
        timer,
        at: deadline.instant(),
        armed: None,
    }
}

impl<F: Future + Unpin, T: Timer + ?Sized> Future for WithTimer<'_, F, T> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.fut).poll(cx) {
            Poll::Ready(v) => Poll::Ready(v),
            Poll::Pending => {
                if !this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.timer.wake_at(this.at, cx.waker());
                    this.armed = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use core::time::Duration;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::Wake;

    /// Records what it was asked to wake.
    #[derive(Default)]
    struct Alarms(Mutex<Vec<(Instant, Waker)>>);
    impl Timer for Alarms {
        fn wake_at(&self, at: Instant, waker: &Waker) {
            self.0.lock().unwrap().push((at, waker.clone()));
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            // Relaxed: a single-threaded count.
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Pending until its deadline has passed when polled, then `Err(())`: the shape of every
    /// fwipc future whose remote stays silent.
    struct GivesUp<'c> {
        clock: &'c ManualClock,
        deadline: Deadline,
    }
    impl Future for GivesUp<'_> {
        type Output = Result<(), ()>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.deadline.expired(self.clock) {
                Poll::Ready(Err(()))
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    // `Waker::will_wake` compares vtable addresses, which Miri does not keep unique (false
    // negatives are allowed by its contract): the exact arm count is only stable natively.
    #[cfg_attr(miri, ignore = "will_wake may return false negatives under Miri")]
    fn a_pending_future_arms_its_deadline_once_per_waker_and_times_out_when_woken() {
        let clock = ManualClock::new();
        let deadline = Deadline::after(&clock, Duration::from_millis(10));
        let alarms = Alarms::default();
        let mut f = with_timer(
            GivesUp {
                clock: &clock,
                deadline,
            },
            &alarms,
            deadline,
        );
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        {
            let a = alarms.0.lock().unwrap();
            assert_eq!(a.len(), 1, "armed once for one waker");
            assert_eq!(a[0].0, deadline.instant());
        }
        // Another task's waker is armed again.
        let other = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        assert!(Pin::new(&mut f)
            .poll(&mut Context::from_waker(&other))
            .is_pending());
        assert_eq!(alarms.0.lock().unwrap().len(), 2);
        // The deadline passes; the timer fires the first alarm; the woken poll times out.
        clock.advance(Duration::from_millis(10));
        let (at, w) = alarms.0.lock().unwrap().remove(0);
        assert!(clock.now() >= at);
        w.wake();
        // Relaxed: see `Count`.
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(Err(())));
    }
}
