//! The datagram scenarios (docs/datagram.md): one-way ordering, RX hold/release under
//! exhaustion, zero-copy buffer ownership, and the name service. Each runs only against a backend
//! whose [`fwipc_transport_api::Caps`] claims the feature, and is skipped with the reason
//! otherwise. This module holds the helpers they share.

mod name_service;
mod one_way;
mod receive_only;
mod rx_hold;
mod zero_copy;

pub use name_service::name_service;
pub use one_way::one_way_ordering;
pub use rx_hold::rx_hold_exhaustion;
pub use zero_copy::zero_copy_ownership;

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{DatagramPeer, Fixture};
use fwipc_transport_api::{Datagram, Endpoint, Error, RxAction};

/// The datagram pair of a fixture whose caps claim a datagram feature; panics if the fixture
/// lacks it.
pub(super) fn pair<F: Fixture>(fx: &F) -> (&dyn Datagram, &dyn DatagramPeer) {
    fx.datagram().unwrap_or_else(|| {
        panic!(
            "{}: Caps claims datagrams but Fixture::datagram() is None",
            F::NAME
        )
    })
}

pub(super) fn tag_of(data: &[u8]) -> u32 {
    let mut t = [0u8; 4];
    let n = data.len().min(4);
    t[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(t)
}

pub(super) fn is_backpressure(e: &Error) -> bool {
    matches!(e, Error::Busy | Error::Retry)
}

/// Everything queued for `ep` right now, released at once, as (source, payload).
pub(super) fn drain(d: &dyn Datagram, ep: &Endpoint, out: &mut Vec<(u32, Vec<u8>)>) {
    d.poll_rx(ep, usize::MAX, &mut |rx| {
        out.push((rx.src, rx.data.to_vec()));
        RxAction::Release
    })
    .expect("poll_rx on a bound endpoint");
}

/// The remote sends each of `payloads` to `ep` (retrying on back-pressure while draining `ep`),
/// then `ep` is drained until as many datagrams as were sent arrived or the fixture's reply
/// timeout passed; asserts that they all arrived and returns them as (source, payload).
pub(super) fn remote_sends_all<F: Fixture>(
    fx: &F,
    d: &dyn Datagram,
    peer: &dyn DatagramPeer,
    ep: &Endpoint,
    payloads: &[Vec<u8>],
) -> Vec<(u32, Vec<u8>)> {
    let mut rx = Vec::new();
    for p in payloads {
        retrying(
            F::NAME,
            fx.reply_timeout(),
            || peer.send(ep.addr(), p),
            || drain(d, ep, &mut rx),
        );
    }
    let all = crate::util::eventually(fx.reply_timeout(), || {
        drain(d, ep, &mut rx);
        rx.len() >= payloads.len()
    });
    assert!(
        all,
        "{}: got {} of {} datagrams",
        F::NAME,
        rx.len(),
        payloads.len()
    );
    rx
}

/// `f` until it succeeds, running `relieve` (e.g. draining the other side) after each
/// back-pressure answer; panics on another error or after `timeout`.
pub(super) fn retrying(
    name: &str,
    timeout: Duration,
    mut f: impl FnMut() -> fwipc_transport_api::Result<()>,
    mut relieve: impl FnMut(),
) {
    let end = Instant::now() + timeout;
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if is_backpressure(&e) => {
                assert!(Instant::now() < end, "{name}: back-pressure never cleared");
                relieve();
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => panic!("{name}: send failed: {e}"),
        }
    }
}
