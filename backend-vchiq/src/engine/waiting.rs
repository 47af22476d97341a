//! The one waiting loop of the instance's blocking calls: poll the instance, ask the caller's
//! check, pause the configured way ([`crate::Config::wait`]), until the deadline on the
//! instance's clock. Built on `fwipc_transport_api`'s [`Wait`](fwipc_transport_api::Wait) and
//! [`Deadline`], like every other blocking call of fwipc.

use core::time::Duration;

use fwipc_transport_api::{Deadline, Wait};

use crate::engine::vchiq::Vchiq;
use crate::error::{Result, VchiqError};

/// The longest a `Wait::Completion` waiter parks between two polls of the instance: nothing in
/// the core wakes a parker, so a blocking call re-polls at least this often.
pub const WAIT_NAP: Duration = Duration::from_micros(50);

impl Vchiq {
    /// Run `check` until it returns `Some`, polling the instance and pausing the configured way
    /// between tries; `Timeout` once `timeout` passed (checked before every poll, and each
    /// poll is bounded by its budget, so a peer that never answers cannot hold the caller past
    /// it by more than one bounded poll).
    pub(crate) fn wait_until<T>(
        &self,
        timeout: Duration,
        check: impl FnMut() -> Option<Result<T>>,
    ) -> Result<T> {
        self.wait_until_with(self.cfg.wait, timeout, VchiqError::Timeout, check)
    }

    /// [`Vchiq::wait_until`] with a caller's [`Wait`] (a VCHI link's, see
    /// [`crate::vchi::core_link::CoreLink::open`]) and its own error type: `expired` is returned
    /// when `timeout` passes.
    pub(crate) fn wait_until_with<T, E>(
        &self,
        wait: Wait<'_>,
        timeout: Duration,
        expired: E,
        mut check: impl FnMut() -> Option<core::result::Result<T, E>>,
    ) -> core::result::Result<T, E> {
        let deadline = self.deadline_after(timeout);
        let mut polls: u32 = 0;
        loop {
            if let Some(r) = self.wait_step(&deadline, &mut check) {
                return r.map_err(|e| e.unwrap_or(expired));
            }
            polls = polls.saturating_add(1);
            wait.pause(polls, WAIT_NAP);
        }
    }

    /// A deadline `timeout` from now on the instance's clock.
    pub(crate) fn deadline_after(&self, timeout: Duration) -> Deadline {
        Deadline::after(&*self.clock, timeout)
    }

    /// One try of the waiting rule, shared by the blocking loop above and the futures
    /// (`crate::engine::futures`): ask `check`; past the deadline `Some(Err(None))` (the
    /// caller's timeout error); else poll the instance once (bounded by its budget) and
    /// `None`: try again after a pause (blocking) or on the next poll of the future.
    pub(crate) fn wait_step<T, E>(
        &self,
        deadline: &Deadline,
        check: &mut impl FnMut() -> Option<core::result::Result<T, E>>,
    ) -> Option<core::result::Result<T, Option<E>>> {
        if let Some(r) = check() {
            return Some(r.map_err(Some));
        }
        if deadline.expired(&*self.clock) {
            return Some(Err(None));
        }
        self.poll();
        None
    }
}
