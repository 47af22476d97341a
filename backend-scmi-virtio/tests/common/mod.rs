//! Setup shared by the integration tests (the protocol agent over the direct transport, echo
//! calls on a virtio channel).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fwipc_scmi_virtio::platform::direct::DirectTransport;
use fwipc_scmi_virtio::platform::{Platform, PlatformConfig};
use fwipc_scmi_virtio::protocol::{Config, Event, Scmi};
use fwipc_transport_api::fixture::echo_reply;
use fwipc_transport_api::{call, Error, Request, StdClock, Transport, Wait};

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

/// The simulated platform's echo command (vendor protocol 0x81, message 3).
pub const ECHO: u32 = (0x81 << 8) | 0x03;

/// One polled echo call of `p` on `t` (5 s deadline): the reply's bytes.
pub fn echo_on<T: Transport>(t: &T, p: &[u8]) -> Result<Vec<u8>, Error> {
    let clock = StdClock::new();
    let mut out = vec![0u8; 256];
    let n = call(
        t,
        &clock,
        &Request::new(ECHO, p).polled(),
        &mut out,
        Duration::from_secs(5),
        Wait::Poll,
    )?;
    out.truncate(n);
    Ok(out)
}

/// What the echo platform answers to `p`.
pub fn inverted(p: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; p.len()];
    echo_reply(p, &mut v);
    v
}

/// Whether `f` holds within 5 s (checked every millisecond).
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
