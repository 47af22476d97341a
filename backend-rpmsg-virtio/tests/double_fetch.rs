//! The double-fetch fault (`sim::Rewrite`): the remote rewrites a frame right after publishing
//! it. The driver copies each buffer once and parses only its copy, so it refuses the frame or
//! delivers one consistent version of it: header and payload from the same copy, never a length
//! its copy's checks did not pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fwipc_conformance::session::hostile_session;
use fwipc_rpmsg_virtio::frame::write_frame;
use fwipc_rpmsg_virtio::sim::{
    RemoteEnd, Rewrite, RingDevice, RpmsgFixture, RpmsgRingFixture, DOUBLE_FETCH, PEER_ADDR,
};
use fwipc_rpmsg_virtio::{Link, RpmsgConfig, RpmsgTransport};
use fwipc_transport_api::{Bind, Datagram, Endpoint, RxAction, StdClock, Transport};

mod common;
use common::{ring_link, RingLink};

type RingTransport = RpmsgTransport<RingLink, StdClock>;

/// A transport over the rings with a datagram endpoint, and the device; no remote thread.
fn ring() -> (RingTransport, RingDevice, Endpoint) {
    let (link, dev) = ring_link();
    let cfg = RpmsgConfig {
        name_service: false,
        interrupts: false,
        ..RpmsgConfig::default()
    };
    let t = RpmsgTransport::new(link, StdClock::new(), cfg).unwrap();
    let ep = t.bind(Bind::Any).unwrap();
    (t, dev, ep)
}

/// The remote sends `payload` to `ep`.
fn frame(ep: &Endpoint, payload: &[u8]) -> Vec<u8> {
    let mut f = [0u8; 512];
    let n = write_frame(&mut f, PEER_ADDR, ep.addr(), payload).unwrap();
    f[..n].to_vec()
}

fn take_all(t: &RingTransport, ep: &Endpoint) -> Vec<(u32, Vec<u8>)> {
    let mut got = Vec::new();
    t.poll_rx(ep, usize::MAX, &mut |rx| {
        got.push((rx.src, rx.data.to_vec()));
        RxAction::Release
    })
    .unwrap();
    got
}

#[test]
fn a_frame_rewritten_before_the_driver_reads_it_is_taken_as_rewritten_or_refused() {
    let (t, dev, ep) = ring();
    // Source, length (shorter) and payload rewritten: one consistent frame, the rewritten one.
    dev.rewrite_after_publish(
        1,
        Rewrite {
            src_xor: 0x3,
            len_add: u16::MAX - 3, // len - 4
            payload_xor: [0xff, 0, 0, 0],
        },
    );
    dev.send(&frame(&ep, b"abcdefgh")).unwrap();
    assert_eq!(
        take_all(&t, &ep),
        vec![(PEER_ADDR ^ 3, vec![!b'a', b'b', b'c', b'd'])]
    );
    // A length beyond what the device reported using: refused and counted, nothing delivered.
    let errors = t.stats().protocol_errors;
    dev.rewrite_after_publish(
        1,
        Rewrite {
            len_add: 1,
            ..Rewrite::default()
        },
    );
    dev.send(&frame(&ep, b"abcdefgh")).unwrap();
    assert_eq!(take_all(&t, &ep), vec![]);
    assert_eq!(t.stats().protocol_errors, errors + 1);
    // The next frame is not rewritten.
    dev.send(&frame(&ep, b"intact")).unwrap();
    assert_eq!(take_all(&t, &ep), vec![(PEER_ADDR, b"intact".to_vec())]);
}

/// The rewrite races the driver's copy: every datagram is refused (its length grew beyond the
/// frame) or delivered with the length it was sent with and, byte for byte, the original or the
/// rewritten payload; none is lost, none delivered twice.
#[test]
fn a_frame_rewritten_while_the_driver_reads_it_is_one_copy() {
    let (t, dev, ep) = ring();
    let rewrite = Rewrite {
        src_xor: 0,
        len_add: 400,
        payload_xor: [0x0f; 4],
    };
    let payload = *b"01234567";
    const N: usize = 2000;
    let done = AtomicBool::new(false);
    let (got, errors) = std::thread::scope(|s| {
        s.spawn(|| {
            let f = frame(&ep, &payload);
            let mut sent = 0;
            let start = Instant::now();
            while sent < N && start.elapsed() < Duration::from_secs(20) {
                dev.rewrite_after_publish(1, rewrite);
                if dev.send(&f).is_ok() {
                    sent += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            // Release: the driver's Acquire load sees every send before the flag.
            done.store(true, Ordering::Release);
        });
        let mut got = Vec::new();
        // Acquire: pairs with the Release store above.
        while !done.load(Ordering::Acquire) {
            got.extend(take_all(&t, &ep));
        }
        // What is still in the ring, a receive budget at a time.
        loop {
            let more = take_all(&t, &ep);
            if more.is_empty() && t.stats().protocol_errors + got.len() as u64 >= N as u64 {
                break;
            }
            got.extend(more);
        }
        (got, t.stats().protocol_errors)
    });
    assert_eq!(
        got.len() as u64 + errors,
        N as u64,
        "lost or doubled frames"
    );
    for (src, data) in &got {
        assert_eq!(*src, PEER_ADDR);
        assert_eq!(
            data.len(),
            payload.len(),
            "a length the checks did not pass"
        );
        for (i, (&b, &p)) in data.iter().zip(&payload).enumerate() {
            let x = if i < 4 { 0x0f } else { 0 };
            assert!(b == p || b == p ^ x, "byte {i}: {b:#x} is neither version");
        }
    }
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The seeds arm the fault through `inject_garbage` (`DOUBLE_FETCH`) for the two replies after
/// the first: the driver refuses exactly those (they time out), the others come back intact
/// (the session checks every reply against its request).
#[test]
fn double_fetch_seeds_refuse_exactly_the_rewritten_replies() {
    for name in ["double_fetch_source", "double_fetch_length_payload"] {
        let s = seed("rpmsg_session", name);
        assert_eq!(
            s[13..17],
            DOUBLE_FETCH,
            "{name}: the seed no longer arms the fault"
        );
        let st = hostile_session::<RpmsgFixture>(&s);
        assert_eq!(
            (st.sent, st.replies, st.timed_out),
            (4, 2, 2),
            "queues, {name}: {st:?}"
        );
        let s = seed("rpmsg_ring_session", name);
        let st = hostile_session::<RpmsgRingFixture>(&s);
        assert_eq!(
            (st.sent, st.replies, st.timed_out),
            (4, 2, 2),
            "rings, {name}: {st:?}"
        );
    }
}
