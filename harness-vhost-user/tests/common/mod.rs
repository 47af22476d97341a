//! Shared test support: daemon start (skip or fail when missing), and a *raw* SCMI driver on
//! `virtio_drivers::queue::VirtQueue` with its own tiny header codec, used to prove the harness
//! (MemfdHal + VhostUserTransport) independently of the fwipc SCMI backend; the backend fixture
//! and the daemon-specific conformance scenarios.
#![allow(dead_code)]

pub mod backend;
pub mod raw;
pub mod scenarios;

use std::time::Duration;

use harness_vhost_user::{daemon_required, Daemon, DaemonError};

/// Bound on every wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Start a daemon with the given fake sensors, or `None` when it is not installed and we are not
/// under CI (the test then returns early, printing why). Under CI a missing daemon panics.
pub fn daemon(sensors: &[&str]) -> Option<Daemon> {
    match Daemon::spawn(sensors, TIMEOUT) {
        Ok(d) => Some(d),
        Err(DaemonError::NotInstalled(why)) if !daemon_required() => {
            eprintln!("SKIPPED: vhost-device-scmi not installed ({why})");
            None
        }
        Err(e) => panic!("cannot start vhost-device-scmi: {e}"),
    }
}

/// `let d = require_daemon!(&["acc0"]);` — returns from the test when skipped.
#[macro_export]
macro_rules! require_daemon {
    ($sensors:expr) => {
        match $crate::common::daemon($sensors) {
            Some(d) => d,
            None => return,
        }
    };
}
