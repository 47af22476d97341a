//! Stall detection: a device that stops consuming the cmdq without signalling anything
//! (no `DEVICE_NEEDS_RESET`, no used element) is told apart from a slow one by time: requests
//! outstanding and not one used element returned for [`ScmiVirtioConfig::stall_timeout`] on the
//! configured [`Clock`].
//!
//! [`ScmiVirtioConfig::stall_timeout`]: super::ScmiVirtioConfig::stall_timeout

use core::time::Duration;

use fwipc_transport_api::{Clock, Deadline};

/// The stall deadline of one channel, armed when the device first holds requests and re-armed
/// whenever it shows it is alive.
///
/// A check with nothing outstanding disarms it without reading the clock: the window of a
/// stall can only begin once a request is held, and the next check that finds one arms it.
/// So a caller that always finds its previous transfer answered (one request in flight, the
/// common case) never reads the clock here; a clock read is a system call or a counter read
/// per `send`, which on a fast path costs as much as the rest of the send's bookkeeping.
#[derive(Debug, Default)]
pub(super) struct StallWatch {
    /// When the device counts as stalled if it returns nothing until then; `None` while
    /// disarmed (nothing outstanding at the last check, or no check yet).
    deadline: Option<Deadline>,
    /// The device returned a used element since the last check.
    progressed: bool,
}

impl StallWatch {
    /// The device returned a used element (whatever it held): it is alive.
    pub(super) fn progress(&mut self) {
        self.progressed = true;
    }

    /// Nothing is outstanding: disarm, forgetting any progress (what [`StallWatch::stalled`]
    /// does for a check with nothing outstanding, without a clock).
    pub(super) fn idle(&mut self) {
        self.progressed = false;
        self.deadline = None;
    }

    /// Whether the device is stalled: `outstanding` requests posted and no used element
    /// returned for `limit` since the first check that found them held (or the last sign of
    /// progress with requests still held). Reads the clock only while requests are
    /// outstanding, at most once.
    pub(super) fn stalled(
        &mut self,
        clock: &dyn Clock,
        limit: Duration,
        outstanding: usize,
    ) -> bool {
        if outstanding == 0 {
            self.idle();
            return false;
        }
        let progressed = core::mem::take(&mut self.progressed);
        match self.deadline {
            Some(d) if !progressed => d.expired(clock),
            _ => {
                self.deadline = Some(Deadline::after(clock, limit));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwipc_transport_api::ManualClock;

    #[test]
    fn only_a_device_that_holds_requests_and_returns_nothing_stalls() {
        let c = ManualClock::new();
        let limit = Duration::from_secs(5);
        let mut w = StallWatch::default();
        assert!(!w.stalled(&c, limit, 0), "armed");
        c.advance(Duration::from_secs(60));
        assert!(!w.stalled(&c, limit, 0), "idle: nothing outstanding");
        assert!(
            !w.stalled(&c, limit, 1),
            "armed by the first check that finds one held"
        );
        c.advance(Duration::from_secs(4));
        assert!(!w.stalled(&c, limit, 1));
        w.progress();
        c.advance(Duration::from_secs(4));
        assert!(!w.stalled(&c, limit, 1), "progress re-arms");
        c.advance(Duration::from_secs(4));
        assert!(!w.stalled(&c, limit, 1), "4 s since the progress");
        c.advance(Duration::from_secs(1));
        assert!(w.stalled(&c, limit, 1), "5 s with nothing returned");
    }

    /// `idle` (the channel's check when nothing is outstanding, which reads no configuration)
    /// disarms as a check with nothing outstanding does: the next held check starts a new window.
    #[test]
    fn idle_disarms_like_a_check_with_nothing_outstanding() {
        let c = ManualClock::new();
        let limit = Duration::from_secs(5);
        let mut w = StallWatch::default();
        assert!(!w.stalled(&c, limit, 1), "armed");
        c.advance(Duration::from_secs(60));
        w.idle();
        assert!(!w.stalled(&c, limit, 1), "a new window, not the old one");
        c.advance(Duration::from_secs(5));
        assert!(w.stalled(&c, limit, 1), "the new window runs out");
    }

    /// A clock that counts its reads.
    struct Counting {
        inner: ManualClock,
        reads: core::sync::atomic::AtomicUsize,
    }

    impl Clock for Counting {
        fn now(&self) -> fwipc_transport_api::Instant {
            // Relaxed: a test counter, read by the same thread.
            self.reads
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            self.inner.now()
        }
    }

    #[test]
    fn nothing_outstanding_reads_no_clock_and_the_window_starts_at_the_first_held_check() {
        let c = Counting {
            inner: ManualClock::new(),
            reads: Default::default(),
        };
        let reads = || c.reads.load(core::sync::atomic::Ordering::Relaxed);
        let limit = Duration::from_secs(5);
        let mut w = StallWatch::default();
        for _ in 0..3 {
            assert!(!w.stalled(&c, limit, 0));
            w.progress();
            assert!(!w.stalled(&c, limit, 0));
        }
        assert_eq!(reads(), 0, "idle checks read no clock");
        c.inner.advance(Duration::from_secs(60));
        assert!(!w.stalled(&c, limit, 1), "a minute idle is not a stall");
        assert_eq!(reads(), 1, "the first held check arms");
        c.inner.advance(Duration::from_secs(5));
        assert!(w.stalled(&c, limit, 1));
        assert_eq!(reads(), 2);
        assert!(!w.stalled(&c, limit, 0), "answered: disarmed");
        assert!(!w.stalled(&c, limit, 1), "armed afresh");
    }
}
