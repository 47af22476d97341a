//! The wakers of the instance's pending futures (`futures.rs`). A future whose check failed
//! registers its task's waker here when the instance is driven by someone else
//! (`Vchiq::set_poll_driven`); every `Vchiq::poll` that did work (a message delivered, a bulk
//! completed, a slot recycled, a deferred event run) wakes them all, and so does the instance's
//! death. A woken future runs its check again and re-registers if it still waits.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Waker;

/// The registered wakers and whether anyone drives the instance's `poll`.
#[derive(Debug, Default)]
pub(crate) struct FutureWakers {
    /// One entry per waiting task (a task re-registering is not added twice). The vector keeps
    /// its capacity across wake-ups, so a steady state allocates nothing.
    list: spin::Mutex<Vec<Waker>>,
    driven: AtomicBool,
}

impl FutureWakers {
    /// Wake `w` after the next poll that does work (or the instance's death).
    pub(crate) fn register(&self, w: &Waker) {
        let mut l = self.list.lock();
        if !l.iter().any(|x| x.will_wake(w)) {
            l.push(w.clone());
        }
    }

    /// Wake every registered waker, with no lock held (a waker may run the task inline).
    pub(crate) fn wake_all(&self) {
        let mut taken = {
            let mut l = self.list.lock();
            // Nothing registered (every poll of a polled driver): one lock, and the list keeps
            // its capacity.
            if l.is_empty() {
                return;
            }
            core::mem::take(&mut *l)
        };
        for w in taken.drain(..) {
            w.wake();
        }
        // Hand the emptied vector back unless a task registered meanwhile (then its new vector
        // stays).
        let mut l = self.list.lock();
        if l.is_empty() {
            core::mem::swap(&mut *l, &mut taken);
        }
    }

    /// Declare whether something other than the futures polls the instance (see
    /// `Vchiq::set_poll_driven`).
    pub(crate) fn set_driven(&self, driven: bool) {
        // Relaxed: a configuration flag; a future that reads a stale value either busy-polls
        // once more or registers a waker that the driver's next poll wakes.
        self.driven.store(driven, Ordering::Relaxed);
    }

    /// Whether [`FutureWakers::set_driven`] declared a driver.
    pub(crate) fn is_driven(&self) -> bool {
        // Relaxed: see `set_driven`.
        self.driven.load(Ordering::Relaxed)
    }

    /// Registered wakers (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            // Relaxed: a single-threaded count.
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn each_task_is_registered_once_and_woken_once_per_wake_all() {
        let ws = FutureWakers::default();
        let a = Arc::new(Count(AtomicUsize::new(0)));
        let b = Arc::new(Count(AtomicUsize::new(0)));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        ws.register(&wa);
        ws.register(&wa.clone());
        ws.register(&wb);
        assert_eq!(ws.len(), 2, "a task re-registering is not added twice");
        ws.wake_all();
        assert_eq!(ws.len(), 0);
        ws.wake_all();
        // Relaxed: single-threaded counts.
        assert_eq!(
            (a.0.load(Ordering::Relaxed), b.0.load(Ordering::Relaxed)),
            (1, 1)
        );
        // The capacity is kept: registering again after a wake-up does not grow a new vector.
        let cap = ws.list.lock().capacity();
        ws.register(&wa);
        assert_eq!(ws.list.lock().capacity(), cap);
    }
}
