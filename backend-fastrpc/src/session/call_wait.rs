//! How a session's blocking calls wait: the transport API's [`Wait`], a [`Clock`] and a per-call
//! timeout, chosen once when the session is opened (see [`crate::Channel::open_session`]) and
//! used by every blocking call of the session: [`crate::Session::invoke`], process control,
//! capability queries and generated stubs.

use alloc::sync::Arc;
use core::fmt;
use core::time::Duration;

use fwipc_transport_api::{Clock, Deadline, Wait};

/// How a session's blocking calls wait. Cheap to clone (the clock is shared).
///
/// ```
/// # #[cfg(feature = "std")] {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use fwipc_fastrpc::CallWait;
/// use fwipc_transport_api::{StdClock, Wait};
///
/// // Poll for at most 2 s per call, yielding the thread after 64 polls.
/// let w = CallWait::new(
///     Arc::new(StdClock::new()),
///     Duration::from_secs(2),
///     Wait::SpinThenYield { spins: 64, relax: &fwipc_transport_api::yield_now },
/// );
/// assert_eq!(w.timeout(), Duration::from_secs(2));
/// # }
/// ```
#[derive(Clone)]
pub struct CallWait {
    clock: Arc<dyn Clock + Send + Sync>,
    timeout: Duration,
    wait: Wait<'static>,
}

impl CallWait {
    /// Wait on `clock` for at most `timeout` per call (Linux kernel-internal calls wait 10 s),
    /// pausing between polls as `wait` says.
    pub fn new(
        clock: Arc<dyn Clock + Send + Sync>,
        timeout: Duration,
        wait: Wait<'static>,
    ) -> Self {
        CallWait {
            clock,
            timeout,
            wait,
        }
    }

    /// The same, with another per-call timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How the caller pauses between polls.
    pub fn wait(&self) -> Wait<'static> {
        self.wait
    }

    /// The time source.
    pub fn clock(&self) -> &(dyn Clock + Send + Sync) {
        &*self.clock
    }

    /// The deadline of a call starting now.
    pub fn deadline(&self) -> Deadline {
        Deadline::after(self.clock(), self.timeout)
    }
}

impl fmt::Debug for CallWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallWait")
            .field("timeout", &self.timeout)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}
