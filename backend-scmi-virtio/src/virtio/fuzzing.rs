//! Fuzzing entry points: one `fn(&[u8])` per parser of device input. Each must return without
//! panicking whatever the bytes; `tests` below runs them over random inputs.

use super::parse::{check_event, check_reply, cmdq_slot, split_reply};

fn word(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    for (i, x) in w.iter_mut().enumerate() {
        *x = b.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(w)
}

/// A cmdq reply: bytes 0..4 the header we sent, 4..8 the used length, the rest the response
/// area.
pub fn cmdq_reply(b: &[u8]) {
    let resp = b.get(8..).unwrap_or(&[]);
    if let Ok(len) = check_reply(word(b, 0), resp, word(b, 4)) {
        let _ = split_reply(&resp[..len]);
    }
}

/// An eventq buffer: bytes 0..4 the used length, the rest the buffer.
pub fn eventq_message(b: &[u8]) {
    let _ = check_event(b.get(4..).unwrap_or(&[]), word(b, 0));
}

/// A used-ring element: bytes 0..4 the id, 4..8 the slot count.
pub fn used_id(b: &[u8]) {
    let _ = cmdq_slot(word(b, 0), word(b, 4) as usize);
}

/// A whole hostile session (std): the bytes are split into used-ring elements and eventq
/// garbage injected into a simulated device under a live transport, with a datagram endpoint
/// bound at the protocol byte 0 names (so garbage that passes the header check is routed to it);
/// once that input is consumed, a normal call must succeed, the endpoint's datagrams can be held
/// and released, and every buffer must be accounted for. Feature `fixtures`.
#[cfg(feature = "fixtures")]
pub fn device_session(b: &[u8]) {
    use core::time::Duration;
    use fwipc_transport_api::fixture::Fixture;
    use fwipc_transport_api::{
        call, Bind, Completion, Datagram, Request, RxAction, StdClock, Transport, Wait,
    };

    let fx = crate::sim::ScmiFixture::with_config(
        Completion::Polled,
        16,
        crate::sim::SimDeviceConfig::default(),
    );
    let proto = 0x10 + u32::from(b.first().copied().unwrap_or(0)) % 0xf0;
    let ep = fx
        .transport()
        .bind(Bind::Addr(proto))
        .expect("bind a protocol");
    for chunk in b.chunks(12) {
        match chunk.first().map(|c| c % 3) {
            Some(0) => fx.device().inject_used(0, word(chunk, 1), word(chunk, 5)),
            Some(1) => {
                let _ = fx
                    .device()
                    .inject_event(chunk.get(1..).unwrap_or(&[]), word(chunk, 1) % 512);
            }
            _ => fx.remote().inject_garbage(chunk),
        }
    }
    let t = fx.transport();
    // Take all hostile input first (the interrupt path drains both rings): a garbage used entry
    // still in the ring when a new chain is posted under the same head would be taken for that
    // chain's return (indistinguishable on the wire; it then fails with a typed error).
    fx.virtio().complete();
    let clock = StdClock::new();
    let mut out = [0u8; 8];
    let req = Request::new(fx.echo_target(), b"live").polled();
    let r = call(
        t,
        &clock,
        &req,
        &mut out,
        Duration::from_secs(5),
        Wait::Poll,
    );
    assert_eq!(r, Ok(4), "normal call after hostile input");
    let mut buf = [0u8; 256];
    // Bounded: a device that kept producing notifications must not keep us here.
    for _ in 0..4096 {
        if !matches!(t.fetch_notification(&mut buf), Ok(Some(_))) {
            break;
        }
    }
    let mut held = alloc::vec::Vec::new();
    for _ in 0..64 {
        let n = t
            .poll_rx(&ep, 8, &mut |rx| {
                assert!(rx.data.len() <= t.caps().max_msg_size, "datagram too long");
                if rx.data.len() % 2 == 1 {
                    held.push(rx.hold);
                    RxAction::Hold
                } else {
                    RxAction::Release
                }
            })
            .expect("poll_rx");
        if n == 0 {
            break;
        }
    }
    for h in held {
        t.release_rx(h).expect("release a held datagram");
    }
    assert_eq!(t.datagram_stats().held, 0);
    t.unbind(ep).expect("unbind");
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::cmdq_reply(&b);
            super::eventq_message(&b);
            super::used_id(&b);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[cfg(feature = "fixtures")]
        #[test]
        fn hostile_sessions_leave_the_transport_working(b in proptest::collection::vec(any::<u8>(), 0..240)) {
            super::device_session(&b);
        }
    }
}
