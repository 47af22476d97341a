//! The name service end to end, through the transport and the simulated remote: announce,
//! destroy, re-announce after a remote reset, and hostile announcements (a flood that would
//! overfill the table, stale destroys, malformed messages), each counted, none fatal.

use std::time::{Duration, Instant};

use fwipc_rpmsg_virtio::addr::{BUF_SIZE, NS_ADDR};
use fwipc_rpmsg_virtio::frame::{ns_payload, write_frame, NsAnnounce};
use fwipc_rpmsg_virtio::name::Name;
use fwipc_rpmsg_virtio::sim::{RpmsgFixture, ECHO_NAME};
use fwipc_rpmsg_virtio::RpmsgConfig;
use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Completion, Transport};
use zerocopy::IntoBytes;

mod common;
use common::echo_ok;

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn ns_frame(name: &[u8], addr: u32, destroy: bool) -> Vec<u8> {
    let a = NsAnnounce {
        name: Name::new(name).unwrap(),
        addr,
        destroy,
    };
    let mut b = [0u8; BUF_SIZE];
    let n = write_frame(&mut b, addr, NS_ADDR, ns_payload(&a).as_bytes()).unwrap();
    b[..n].to_vec()
}

#[test]
fn announce_and_destroy_reach_the_driver() {
    let fx = RpmsgFixture::setup(Completion::Polled);
    let t = fx.transport();
    assert_eq!(t.service(ECHO_NAME), Some(fx.echo_target()));
    let a = fx.sim().bind_service(b"extra").expect("bind");
    assert_ne!(a, fx.echo_target());
    assert!(eventually(|| {
        t.handle_interrupt();
        t.service(b"extra") == Some(a)
    }));
    assert!(fx.sim().unbind_service(a));
    assert!(eventually(|| {
        t.handle_interrupt();
        t.service(b"extra").is_none()
    }));
    // The remote re-uses the freed address for the next endpoint, as Linux's idr does.
    assert_eq!(fx.sim().bind_service(b"again"), Some(a));
    echo_ok(&fx);
}

#[test]
fn the_driver_announces_its_notification_endpoint() {
    let fx = RpmsgFixture::setup(Completion::Interrupt);
    assert_eq!(
        fx.sim().driver_notify_addr(),
        Some(fx.transport().notify_addr())
    );
}

#[test]
fn remote_reset_re_announces() {
    let fx = RpmsgFixture::setup(Completion::Interrupt);
    let t = fx.transport();
    t.peer_reset();
    assert_eq!(t.service(ECHO_NAME), None);
    fx.remote().reset_remote();
    assert!(eventually(|| {
        t.handle_interrupt();
        t.service(ECHO_NAME) == Some(fx.echo_target())
    }));
    echo_ok(&fx);
}

#[test]
fn hostile_announcements_are_counted_and_bounded() {
    let fx = RpmsgFixture::setup(Completion::Polled);
    let t = fx.transport();
    let cap = RpmsgConfig::default().services;
    let before = t.stats().protocol_errors;
    // More distinct services than the table holds: the excess is refused and counted.
    for i in 0..cap + 8 {
        let name = format!("flood-{i}");
        fx.remote()
            .inject_garbage(&ns_frame(name.as_bytes(), 2000 + i as u32, false));
    }
    // A destroy for a service at an address it does not have: stale, refused, counted.
    fx.remote()
        .inject_garbage(&ns_frame(ECHO_NAME, fx.echo_target() + 1, true));
    // Malformed: flags 7, and a name without NUL.
    let mut bad = ns_frame(b"x", 3000, false);
    let l = bad.len();
    bad[l - 4] = 7;
    fx.remote().inject_garbage(&bad);
    let mut unterminated = ns_frame(b"y", 3001, false);
    unterminated[16..48].fill(b'z');
    fx.remote().inject_garbage(&unterminated);
    t.handle_interrupt();
    // The echo service was announced first and so holds a place: cap - 1 floods fit.
    let refused = 8 + 1;
    assert!(
        eventually(|| {
            t.handle_interrupt();
            t.stats().protocol_errors - before == refused as u64 + 1 + 2
        }),
        "{:?}",
        t.stats()
    );
    assert_eq!(
        t.service(ECHO_NAME),
        Some(fx.echo_target()),
        "stale destroy applied"
    );
    assert_eq!(t.service(b"flood-0"), Some(2000));
    assert_eq!(
        t.service(format!("flood-{}", cap - 2).as_bytes()),
        Some(2000 + cap as u32 - 2)
    );
    assert_eq!(t.service(format!("flood-{}", cap - 1).as_bytes()), None);
    echo_ok(&fx);
}
