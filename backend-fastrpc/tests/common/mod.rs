//! Setup shared by the integration tests.

// Each test binary compiles this module; not every one uses every helper.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::CallWait;
use fwipc_transport_api::{Completion, StdClock, Wait};

/// How sessions opened on a bare channel wait: busy polling, 2 s per call.
pub fn poll_wait() -> CallWait {
    CallWait::new(
        Arc::new(StdClock::new()),
        Duration::from_secs(2),
        Wait::Poll,
    )
}

/// A simulated system (channel, DSP, bus) in the default configuration, interrupt-driven.
pub fn interrupt_system() -> SimSystem {
    SimSystem::new(SimSystem::default_config(), Completion::Interrupt)
}

/// Waits (up to 10 s) until `cond` holds.
pub fn wait_for(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}
