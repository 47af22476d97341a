//! Shared helpers of the protocol tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fwipc_scmi_virtio::platform::direct::DirectTransport;
use fwipc_scmi_virtio::platform::{Platform, PlatformConfig};
use fwipc_scmi_virtio::protocol::{Config, Event, Scmi};
use fwipc_transport_api::StdClock;

pub type DirectScmi = Scmi<DirectTransport, StdClock>;

/// Agent config for tests: short deadlines, yielding waits.
pub fn cfg() -> Config {
    Config {
        wait: fwipc_transport_api::Wait::SpinThenYield {
            spins: 64,
            relax: &std::thread::yield_now,
        },
        ..Config::default()
    }
    .with_timeouts(Duration::from_secs(5), Duration::from_secs(5))
}

/// An agent over a direct transport with 136-byte reply buffers (Linux's size).
pub fn direct(pc: PlatformConfig) -> DirectScmi {
    direct_sized(pc, 16, 128, cfg())
}

pub fn direct_sized(pc: PlatformConfig, max_msg: usize, size: usize, c: Config) -> DirectScmi {
    let t = DirectTransport::with_sizes(Platform::new(pc), max_msg, size);
    Scmi::new(t, StdClock::new(), c).expect("agent config")
}

/// A subscriber that records (protocol, message, payload) of every notification.
pub type Log = Arc<Mutex<Vec<(u8, u8, Vec<u8>)>>>;

pub fn recorder() -> (Log, fwipc_scmi_virtio::protocol::Callback) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let cb = Arc::new(move |ev: &Event<'_>| {
        l2.lock().unwrap().push((
            ev.header.protocol_id,
            ev.header.message_id,
            ev.payload.to_vec(),
        ));
    });
    (log, cb)
}
