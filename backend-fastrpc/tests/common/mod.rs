//! Setup shared by the integration tests.

use std::sync::Arc;
use std::time::Duration;

use fwipc_fastrpc::CallWait;
use fwipc_transport_api::{StdClock, Wait};

/// How sessions opened on a bare channel wait: busy polling, 2 s per call.
pub fn poll_wait() -> CallWait {
    CallWait::new(
        Arc::new(StdClock::new()),
        Duration::from_secs(2),
        Wait::Poll,
    )
}
