//! Stall detection: a device that stops consuming the cmdq without signalling anything
//! (no `DEVICE_NEEDS_RESET`, no used element) is told apart from a slow one by time: requests
//! outstanding and not one used element returned for [`ScmiVirtioConfig::stall_timeout`] on the
//! configured [`Clock`].
//!
//! [`ScmiVirtioConfig::stall_timeout`]: super::ScmiVirtioConfig::stall_timeout

use core::time::Duration;

use fwipc_transport_api::{Clock, Deadline};

/// The stall deadline of one channel, re-armed whenever the device shows it is alive.
#[derive(Debug, Default)]
pub(super) struct StallWatch {
    /// When the device counts as stalled if it returns nothing until then; `None` until the
    /// first check.
    deadline: Option<Deadline>,
    /// The device returned a used element since the last check.
    progressed: bool,
}

impl StallWatch {
    /// The device returned a used element (whatever it held): it is alive.
    pub(super) fn progress(&mut self) {
        self.progressed = true;
    }

    /// Whether the device is stalled: `outstanding` requests posted and no used element
    /// returned for `limit`. The deadline is re-armed while nothing is outstanding and after
    /// every sign of progress, so only a device that holds requests and returns nothing for the
    /// whole of `limit` is stalled. Reads the clock once.
    pub(super) fn stalled(
        &mut self,
        clock: &dyn Clock,
        limit: Duration,
        outstanding: usize,
    ) -> bool {
        let progressed = core::mem::take(&mut self.progressed);
        match self.deadline {
            Some(d) if outstanding > 0 && !progressed => d.expired(clock),
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
        assert!(!w.stalled(&c, limit, 1), "re-armed while idle, so not yet");
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
}
