//! [`EventParker`]: a [`Parker`] for bare metal, for
//! [`Wait::Completion`](fwipc_transport_api::Wait::Completion), with no hand-written `RawWaker`.
//!
//! The waker sets a flag and, on aarch64, signals an event (`dsb ish` then `sev`); the parker
//! checks the flag and otherwise runs an *idle* step until the flag is set or the timeout passes
//! on the parker's [`Clock`]. With the WFE idle step (`aarch64::wfe`, see
//! `aarch64::WfeParker`) this is the classic lost-wake-up-free pattern (Arm ARM "Wait For
//! Event mechanism and Send event"): a wake between the flag check and the `wfe` has already set
//! the event register, so the `wfe` returns at once and the loop sees the flag.
//!
//! Waking is safe from any context that may touch an atomic: another CPU, or an interrupt handler
//! (the transport calls `wake_by_ref` on a clone of [`Parker::waker`]). Cloning and dropping
//! clones of the waker adjust an `Arc` count; the parker itself keeps one reference, so the last
//! drop (the free) never happens in an interrupt handler while the parker is alive.
//!
//! How long one idle step may sleep is the idle function's business: a bare `wfe` sleeps until an
//! event, so something must bound it for timeouts to be honoured (an interrupt, or the generic
//! timer's event stream, `aarch64::enable_event_stream`).

use alloc::sync::Arc;
use alloc::task::Wake;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Waker;
use core::time::Duration;

use fwipc_transport_api::{Clock, Deadline, Parker};

/// The waker's side: a flag plus an event.
#[derive(Debug, Default)]
struct Signal {
    woken: AtomicBool,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Release: whatever the waker wrote before waking is visible to the parked side that
        // Acquire-swaps the flag.
        self.woken.store(true, Ordering::Release);
        send_event();
    }
}

/// Make the flag store visible, then wake every CPU waiting in `wfe`.
fn send_event() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `dsb ish` only orders memory accesses (the flag store completes before the event
    // is sent), and `sev` only sets the event register of every PE; neither touches memory Rust
    // knows about.
    unsafe {
        core::arch::asm!("dsb ish", "sev", options(nostack, preserves_flags))
    };
}

/// A bare-metal [`Parker`]: the flag-and-event waker described in the module docs, an idle step
/// run between flag checks, and a [`Clock`] for the timeout.
pub struct EventParker<C> {
    clock: C,
    signal: Arc<Signal>,
    waker: Waker,
    idle: fn(),
}

impl<C> fmt::Debug for EventParker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventParker")
            .field("woken", &self.signal.woken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<C: Clock> EventParker<C> {
    /// A parker timing out on `clock` that calls `idle` between checks (a `wfe`, a `wfi` with
    /// interrupts unmasked, a scheduler yield...). Allocates once: create it once and reuse it.
    pub fn new(clock: C, idle: fn()) -> Self {
        let signal = Arc::new(Signal::default());
        EventParker {
            clock,
            waker: Waker::from(signal.clone()),
            signal,
            idle,
        }
    }

    /// Whether the waker fired since the last park (does not consume the wake-up).
    pub fn is_woken(&self) -> bool {
        // Acquire: pairs with the waker's Release store.
        self.signal.woken.load(Ordering::Acquire)
    }
}

impl<C: Clock> Parker for EventParker<C> {
    fn waker(&self) -> &Waker {
        &self.waker
    }

    fn park_timeout(&self, timeout: Duration) {
        let deadline = Deadline::after(&self.clock, timeout);
        loop {
            // Acquire: pairs with the waker's Release store; consuming the flag makes the next
            // park wait for the next wake.
            if self.signal.woken.swap(false, Ordering::Acquire) || deadline.expired(&self.clock) {
                return;
            }
            (self.idle)();
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::sync::atomic::AtomicU32;
    use std::time::Instant as StdInstant;

    use fwipc_transport_api::{Instant, ManualClock};

    use super::*;

    /// A clock on `std::time`, so timeouts pass on their own.
    struct Wall(StdInstant);
    impl Clock for Wall {
        fn now(&self) -> Instant {
            Instant(self.0.elapsed().as_nanos() as u64)
        }
    }

    fn yield_now() {
        std::thread::yield_now()
    }

    #[test]
    fn wake_from_another_thread_unparks() {
        let parker = EventParker::new(Wall(StdInstant::now()), yield_now);
        let waker = parker.waker().clone();
        let t0 = StdInstant::now();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        parker.park_timeout(Duration::from_secs(10));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        h.join().unwrap();
        assert!(!parker.is_woken(), "the wake-up was consumed");
    }

    #[test]
    fn wake_before_park_is_not_lost() {
        let parker = EventParker::new(Wall(StdInstant::now()), yield_now);
        parker.waker().wake_by_ref();
        assert!(parker.is_woken());
        let t0 = StdInstant::now();
        parker.park_timeout(Duration::from_secs(10));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    static IDLES: AtomicU32 = AtomicU32::new(0);
    fn count_idle() {
        IDLES.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn times_out_on_its_clock() {
        let parker = EventParker::new(Wall(StdInstant::now()), count_idle);
        let t0 = StdInstant::now();
        parker.park_timeout(Duration::from_millis(5));
        assert!(t0.elapsed() >= Duration::from_millis(5));
        assert!(IDLES.load(Ordering::Relaxed) > 0);
        // A clock that does not move and a zero timeout: returns without idling forever.
        let frozen = EventParker::new(ManualClock::new(), count_idle);
        frozen.park_timeout(Duration::ZERO);
    }

    /// A transport whose one transfer completes from another thread 10 ms after a waker is
    /// registered, waking it.
    struct LateCompletion {
        done: std::sync::Arc<AtomicBool>,
    }

    impl fwipc_transport_api::Transport for LateCompletion {
        fn caps(&self) -> fwipc_transport_api::Caps {
            fwipc_transport_api::Caps::new(1, 8)
        }
        fn send(
            &self,
            _req: &fwipc_transport_api::Request<'_>,
        ) -> fwipc_transport_api::Result<fwipc_transport_api::Ticket> {
            Ok(fwipc_transport_api::Ticket::new(0, 0, 0))
        }
        fn poll_done(&self, _t: &fwipc_transport_api::Ticket) -> fwipc_transport_api::Result<bool> {
            Ok(self.done.load(Ordering::Acquire))
        }
        fn fetch_response(
            &self,
            _t: &fwipc_transport_api::Ticket,
            _out: &mut [u8],
        ) -> fwipc_transport_api::Result<usize> {
            Ok(0)
        }
        fn mark_txdone(&self, _t: fwipc_transport_api::Ticket, _o: fwipc_transport_api::TxOutcome) {
        }
        fn register_waker(&self, _t: &fwipc_transport_api::Ticket, waker: &Waker) -> bool {
            let (done, waker) = (self.done.clone(), waker.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                done.store(true, Ordering::Release);
                waker.wake();
            });
            true
        }
        fn shutdown(&self) -> fwipc_transport_api::Result<()> {
            Ok(())
        }
        fn stats(&self) -> fwipc_transport_api::Stats {
            fwipc_transport_api::Stats::default()
        }
    }

    #[test]
    fn wait_completion_is_woken_by_the_transport() {
        use fwipc_transport_api::{wait_done, Transport, Wait};
        let clock = Wall(StdInstant::now());
        let parker = EventParker::new(Wall(StdInstant::now()), yield_now);
        let t = LateCompletion {
            done: std::sync::Arc::new(AtomicBool::new(false)),
        };
        let ticket = t.send(&fwipc_transport_api::Request::new(0, &[])).unwrap();
        let t0 = StdInstant::now();
        let deadline = Deadline::after(&clock, Duration::from_secs(10));
        wait_done(&t, &ticket, &clock, deadline, Wait::Completion(&parker)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
