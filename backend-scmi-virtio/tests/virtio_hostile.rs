//! A hostile or broken device: every remote length and id is checked, mismatches are typed errors
//! plus counters, never panics; timed-out buffers and tokens stay quarantined until the device
//! returns them (docs/protocols/scmi.md §8 items 3–6).

use std::time::{Duration, Instant};

use fwipc_scmi_virtio::sim::{ScmiFixture, SimDeviceConfig};
use fwipc_transport_api::fixture::{echo_reply, Fault, Fixture};
use fwipc_transport_api::{
    call, wait_done, Completion, Deadline, Error, ProtocolError, Request, StdClock, ThreadParker,
    Transport, TxOutcome, Wait,
};

mod common;
use common::eventually;

const ECHO: u32 = (0x81 << 8) | 0x03;

fn echo(fx: &ScmiFixture, p: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
    let clock = StdClock::new();
    let parker = ThreadParker::new();
    let mut out = vec![0u8; 256];
    let r = Request::new(ECHO, p);
    let (r, w) = match fx.completion() {
        Completion::Polled => (r.polled(), Wait::Poll),
        Completion::Interrupt => (r, Wait::Completion(&parker)),
    };
    let n = call(fx.transport(), &clock, &r, &mut out, timeout, w)?;
    out.truncate(n);
    Ok(out)
}

fn echo_ok(fx: &ScmiFixture, p: &[u8]) {
    let got = echo(fx, p, Duration::from_secs(5)).expect("echo");
    let mut want = vec![0u8; p.len()];
    echo_reply(p, &mut want);
    assert_eq!(got, want);
}

fn fixture(mode: Completion) -> ScmiFixture {
    ScmiFixture::with_config(mode, 64, SimDeviceConfig::default())
}

#[test]
fn used_length_beyond_posted_is_bad_length() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let fx = fixture(mode);
        fx.remote().set_fault(Fault::CorruptLength);
        // The sim alternates: first a length 64 bytes beyond the writable descriptor, then 3.
        let a = echo(&fx, b"abcd", Duration::from_secs(5));
        let b = echo(&fx, b"abcd", Duration::from_secs(5));
        let mut got = [a, b];
        got.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            got,
            [
                Err(Error::Protocol(ProtocolError::BadLength)),
                Err(Error::Protocol(ProtocolError::Truncated))
            ]
        );
        assert_eq!(fx.transport().stats().protocol_errors, 2);
        fx.remote().set_fault(Fault::None);
        echo_ok(&fx, b"after");
        let s = fx.transport().stats();
        assert_eq!(s.pool_free, s.pool_capacity);
    }
}

#[test]
fn used_ids_out_of_range_odd_or_not_in_flight_are_counted() {
    let fx = fixture(Completion::Interrupt);
    let t = fx.transport();
    echo_ok(&fx, b"warm");
    fx.device().inject_used(0, 5000, 8); // beyond the ring
    fx.device().inject_used(0, 7, 8); // a response descriptor, not a chain head
    fx.device().inject_used(0, 10, 8); // a chain head that is not in flight
    fx.device().inject_used(0, u32::MAX, u32::MAX);
    assert!(
        eventually(|| {
            let s = t.stats();
            s.protocol_errors == 3 && s.duplicate_replies == 1
        }),
        "{:?}",
        t.stats()
    );
    echo_ok(&fx, b"still fine");
    assert_eq!(t.stats().completed, 2);
}

#[test]
fn duplicate_used_entry_is_dropped_and_counted() {
    let fx = fixture(Completion::Interrupt);
    fx.remote().set_fault(Fault::Duplicate);
    echo_ok(&fx, b"once");
    assert!(eventually(|| fx.transport().stats().duplicate_replies == 1));
    fx.remote().set_fault(Fault::None);
    echo_ok(&fx, b"twice");
    let s = fx.transport().stats();
    assert_eq!((s.completed, s.duplicate_replies), (2, 1));
}

#[test]
fn right_token_wrong_message_id_is_rejected() {
    let fx = fixture(Completion::Interrupt);
    fx.device().set_header_xor(1);
    let r = echo(&fx, b"msg", Duration::from_secs(5));
    assert_eq!(r, Err(Error::Protocol(ProtocolError::UnexpectedMessage)));
    fx.device().set_header_xor(1 << 18); // wrong token
    let r = echo(&fx, b"tok", Duration::from_secs(5));
    assert_eq!(r, Err(Error::Protocol(ProtocolError::UnknownToken)));
    fx.device().set_header_xor(0x100); // type 1
    let r = echo(&fx, b"typ", Duration::from_secs(5));
    assert_eq!(r, Err(Error::Protocol(ProtocolError::BadHeader)));
    let s = fx.transport().stats();
    assert_eq!(
        (s.protocol_errors, s.unknown_replies, s.completed),
        (2, 1, 0)
    );
    fx.device().set_header_xor(0);
    echo_ok(&fx, b"ok");
}

#[test]
fn used_index_jump_beyond_ring_is_survived() {
    // Polled fixture: nothing drains the ring while we flood it.
    let fx = fixture(Completion::Polled);
    for i in 0..200 {
        fx.device().inject_used(0, 1000 + i, 8);
    }
    echo_ok(&fx, b"after flood");
    let s = fx.transport().stats();
    assert!(s.protocol_errors >= 1, "{s:?}");
    assert_eq!(s.completed, 1);
}

#[test]
fn garbage_in_eventq_is_counted_and_buffer_reposted() {
    let fx = fixture(Completion::Interrupt);
    let t = fx.transport();
    let posted = t.eventq_posted();
    assert!(posted > 0);
    // Reserved bits set (BadHeader), too short (Truncated), longer than the buffer (BadLength),
    // a command type on the eventq (UnexpectedMessage).
    let cases: [(&[u8], u32); 4] = [
        (&[0xFF; 12], 12),
        (&[1, 2], 2),
        (&[0x03, 0, 0x04, 0], 4096),
        (&[0x03, 0x00, 0x04, 0x02], 4),
    ];
    let start = Instant::now();
    for (bytes, len) in cases {
        while !fx.device().inject_event(bytes, len) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "device has no eventq buffer"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        eventually(|| t.stats().protocol_errors == 4),
        "{:?}",
        t.stats()
    );
    assert!(
        eventually(|| t.eventq_posted() == posted),
        "malformed buffers re-posted"
    );
    let mut buf = [0u8; 64];
    assert_eq!(t.fetch_notification(&mut buf), Ok(None));
}

/// docs/protocols/scmi.md §8 item 5: time out one request, send 2000 more, deliver the late reply:
/// nothing live completes from it, the stuck token and buffer were never reused, everything is
/// returned.
#[test]
fn token_quarantine_across_2000_transfers() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let fx = fixture(mode);
        let t = fx.transport();
        fx.remote().set_fault(Fault::Hold);
        assert_eq!(
            echo(&fx, b"stuck", Duration::from_millis(30)),
            Err(Error::Timeout)
        );
        assert_eq!(t.tokens_in_use(), 1, "the timed-out token is quarantined");
        fx.remote().set_fault(Fault::None);
        for i in 0u32..2000 {
            echo_ok(&fx, &i.to_le_bytes());
        }
        assert_eq!(t.tokens_in_use(), 1);
        assert_eq!(
            t.stats().pool_free,
            t.stats().pool_capacity - 1,
            "stuck buffer not reused"
        );
        // Now some live transfers are held too, and the late reply comes back among them.
        fx.remote().set_fault(Fault::Hold);
        let payloads: Vec<Vec<u8>> = (0..4u32)
            .map(|i| (0x5000 + i).to_le_bytes().to_vec())
            .collect();
        let tickets: Vec<_> = payloads
            .iter()
            .map(|p| {
                let r = Request::new(ECHO, p);
                t.send(&if mode == Completion::Polled {
                    r.polled()
                } else {
                    r
                })
                .unwrap()
            })
            .collect();
        assert!(eventually(|| fx.device().held() == 5));
        fx.remote().set_fault(Fault::None);
        fx.remote().release();
        let clock = StdClock::new();
        let parker = ThreadParker::new();
        for (tk, p) in tickets.into_iter().zip(&payloads) {
            let w = if mode == Completion::Polled {
                Wait::Poll
            } else {
                Wait::Completion(&parker)
            };
            wait_done(
                t,
                &tk,
                &clock,
                Deadline::after(&clock, Duration::from_secs(5)),
                w,
            )
            .unwrap();
            let mut out = [0u8; 8];
            let n = t.fetch_response(&tk, &mut out).unwrap();
            let mut want = vec![0u8; 4];
            echo_reply(p, &mut want);
            assert_eq!(
                &out[..n],
                &want[..],
                "a live transfer got someone else's reply"
            );
            t.mark_txdone(tk, TxOutcome::Done);
        }
        assert!(
            eventually(|| t.stats().late_replies == 1),
            "{mode:?}: {:?}",
            t.stats()
        );
        // In polled mode nothing drains the ring after the last poll: one more call does.
        echo_ok(&fx, b"last");
        assert_eq!(t.tokens_in_use(), 0);
        let s = t.stats();
        assert_eq!(s.pool_free, s.pool_capacity);
        assert_eq!(s.completed, 2000 + 4 + 1);
    }
}

/// docs/protocols/scmi.md §8 item 6: a device that keeps every buffer → Busy after vring/2 sends
/// (counted); recovers when the buffers come back.
#[test]
fn device_holding_everything_gives_busy_after_half_the_ring() {
    let fx = fixture(Completion::Interrupt);
    let t = fx.transport();
    assert_eq!(t.max_msg(), 32, "64-entry cmdq → 32 messages");
    fx.remote().set_fault(Fault::Hold);
    let mut tickets = Vec::new();
    let err = loop {
        match t.send(&Request::new(ECHO, b"held")) {
            Ok(tk) => tickets.push(tk),
            Err(e) => break e,
        }
    };
    assert_eq!((tickets.len(), err), (32, Error::Busy));
    assert_eq!(t.stats().busy, 1);
    fx.remote().set_fault(Fault::None);
    fx.remote().release();
    let clock = StdClock::new();
    let parker = ThreadParker::new();
    for tk in tickets {
        wait_done(
            t,
            &tk,
            &clock,
            Deadline::after(&clock, Duration::from_secs(5)),
            Wait::Completion(&parker),
        )
        .unwrap();
        t.mark_txdone(tk, TxOutcome::Done);
    }
    assert_eq!(t.stats().pool_free, 32);
    echo_ok(&fx, b"recovered");
}

#[test]
fn stale_and_forged_tickets_are_rejected() {
    let fx = fixture(Completion::Polled);
    let t = fx.transport();
    let tk = t.send(&Request::new(ECHO, b"x").polled()).unwrap();
    let forged =
        fwipc_transport_api::Ticket::new(tk.token(), tk.slot(), tk.generation().wrapping_add(1));
    assert_eq!(t.poll_done(&forged), Err(Error::InvalidArgument));
    let mut out = [0u8; 4];
    assert_eq!(
        t.fetch_response(&forged, &mut out),
        Err(Error::InvalidArgument)
    );
    t.mark_txdone(forged, TxOutcome::Done); // ignored
    let clock = StdClock::new();
    wait_done(
        t,
        &tk,
        &clock,
        Deadline::after(&clock, Duration::from_secs(5)),
        Wait::Poll,
    )
    .unwrap();
    assert_eq!(t.fetch_response(&tk, &mut [0u8; 0]), Err(Error::TooLarge));
    t.mark_txdone(tk, TxOutcome::Done);
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

/// The double-fetch fault: a device that flips bytes of a reply right after publishing it (the
/// header word, the status word, the used length). Stepped, so the flip lands before the driver
/// looks: the driver reads each byte once and checks its copy, so each such transfer ends once,
/// with the error its copy deserves (wrong header: `Protocol`, flipped status: `Remote`, length
/// beyond the buffer: `Protocol(BadLength)`), and the pool is whole afterwards.
#[test]
fn replies_rewritten_after_publication_end_once_with_an_error() {
    use fwipc_transport_api::fixture::SimMode;
    let fx = ScmiFixture::setup(Completion::Polled);
    assert!(fx.remote().set_sim_mode(SimMode::Stepped));
    let t = fx.transport();
    let one = |mask: [u8; 9]| {
        fx.device().rewrite_after_publish(1, mask);
        let tk = t.send(&Request::new(ECHO, &[1, 2, 3, 4]).polled()).unwrap();
        while fx.remote().step() {}
        let done = t.poll_done(&tk);
        let mut out = [0u8; 16];
        let r = match done {
            Ok(true) => t.fetch_response(&tk, &mut out),
            Ok(false) => panic!("the reply was published"),
            Err(e) => Err(e),
        };
        assert_eq!(
            t.poll_done(&tk),
            done,
            "a finished transfer keeps its outcome"
        );
        t.mark_txdone(tk, TxOutcome::Done);
        r
    };
    let protocol_errors = t.stats().protocol_errors;
    assert!(matches!(
        one([0x40, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(Error::Protocol(_))
    ));
    assert!(t.stats().protocol_errors + t.stats().unknown_replies > protocol_errors);
    assert_eq!(one([0, 0, 0, 0, 5, 0, 0, 0, 0]), Err(Error::Remote(5)));
    assert_eq!(
        one([0, 0, 0, 0, 0, 0, 0, 0, 1]),
        Err(Error::Protocol(ProtocolError::BadLength))
    );
    // Garbage starting with DOUBLE_FETCH arms the same fault (the stateful fuzz targets' way).
    fx.remote()
        .inject_garbage(&[&fwipc_scmi_virtio::sim::DOUBLE_FETCH[..], &[0, 0x40]].concat());
    let tk = t.send(&Request::new(ECHO, &[9; 4]).polled()).unwrap();
    while fx.remote().step() {}
    assert!(matches!(t.poll_done(&tk), Ok(true)));
    assert!(matches!(
        t.fetch_response(&tk, &mut [0u8; 16]),
        Err(Error::Protocol(_))
    ));
    t.mark_txdone(tk, TxOutcome::Done);
    // Used up: the next reply is intact.
    let tk = t.send(&Request::new(ECHO, &[7; 4]).polled()).unwrap();
    while fx.remote().step() {}
    assert_eq!(t.poll_done(&tk), Ok(true));
    let mut out = [0u8; 16];
    assert_eq!(t.fetch_response(&tk, &mut out), Ok(4));
    assert_eq!(out[..4], [!7u8; 4]);
    t.mark_txdone(tk, TxOutcome::Done);
    fx.remote().set_sim_mode(SimMode::Normal);
    t.shutdown().unwrap();
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

/// A used element the device published before a chain was made available is not that chain's
/// completion, even when it names the chain's head: here a forged element for head 0 (length 37)
/// waits in the used ring while head 0 is reused by the next send, and the device then answers
/// that send properly (8 bytes of header and status). Taking the forged element would deliver
/// the device's reply at the forged length, with stale bytes of the previous reply after it.
#[test]
fn a_used_element_older_than_its_chain_is_refused() {
    use fwipc_transport_api::fixture::SimMode;
    let fx = fixture(Completion::Polled);
    let t = fx.transport();
    assert!(fx.remote().set_sim_mode(SimMode::Stepped));
    let round_trip = |payload: &[u8]| {
        let tk = t.send(&Request::new(ECHO, payload).polled()).expect("send");
        assert_eq!(tk.slot(), 0, "one transfer at a time reuses message 0");
        for _ in 0..4 {
            fx.remote().step();
        }
        assert_eq!(t.poll_done(&tk), Ok(true));
        let mut out = [0u8; 64];
        let r = t.fetch_response(&tk, &mut out).map(|n| out[..n].to_vec());
        t.mark_txdone(tk, TxOutcome::Done);
        r
    };
    assert_eq!(round_trip(&[1, 0, 3, 4]), Ok(vec![!1, !0, !3, !4]));
    // Head 0 is free now: the forged element names it before its next use.
    fx.device().inject_used(0, 0, 37);
    let before = t.stats().protocol_errors;
    assert_eq!(round_trip(&[]), Ok(vec![]), "the forged length was taken");
    assert_eq!(t.stats().protocol_errors, before + 1);
    fx.remote().set_sim_mode(SimMode::Normal);
    echo_ok(&fx, b"after");
}

/// A chain the device returns without writing the response (docs/protocols/scmi.md §8 item 4)
/// is refused, never delivered with what the response area held before: an earlier reply of the
/// same message (another token), and, once the tokens have wrapped, an earlier reply whose
/// header is the very header sent, which the send overwrote with the sentinel.
#[test]
fn a_chain_returned_unwritten_is_refused() {
    use fwipc_transport_api::fixture::SimMode;
    use fwipc_transport_api::Ticket;
    let fx = fixture(Completion::Polled);
    let t = fx.transport();
    assert!(fx.remote().set_sim_mode(SimMode::Stepped));
    let send = |p: &[u8]| t.send(&Request::new(ECHO, p).polled()).expect("send");
    let done = |tk: &Ticket| {
        for _ in 0..8 {
            if t.poll_done(tk) == Ok(true) {
                return;
            }
            fx.remote().step();
        }
        panic!("no reply");
    };
    let finish = |tk: Ticket| {
        let mut out = [0u8; 64];
        let r = t.fetch_response(&tk, &mut out).map(|n| out[..n].to_vec());
        t.mark_txdone(tk, TxOutcome::Done);
        r
    };
    // The device returns `tk`'s chain (head 2 × slot) claiming header and status written, before
    // it has looked at the chain; then its own pass returns the chain again (a duplicate).
    let unwritten = |tk: Ticket| {
        fx.device().inject_used(0, 2 * tk.slot(), 8);
        assert_eq!(t.poll_done(&tk), Ok(true));
        let r = finish(tk);
        for _ in 0..4 {
            fx.remote().step();
        }
        r
    };
    let tk = send(&[1, 2, 3, 4]);
    done(&tk);
    assert_eq!(finish(tk), Ok(vec![!1, !2, !3, !4]));
    // The same buffer again: its response area holds the reply above, another token's.
    let tk = send(&[5, 6, 7, 8]);
    let r = unwritten(tk);
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");

    // Two buffers: `a` answered with token `ta`, then left free while `b` carries every transfer
    // until the next token is `ta` again, which `a` then gets.
    let pa = send(&[9; 4]);
    let pb = send(&[10; 4]);
    let (a, ta) = (pa.slot(), pa.token());
    assert_ne!(pb.slot(), a);
    done(&pa);
    done(&pb);
    assert!(finish(pa).is_ok());
    assert!(finish(pb).is_ok());
    let mut wrapped = false;
    let mut z1 = send(&[11; 4]);
    for _ in 0..2048 {
        assert_ne!(z1.slot(), a, "the last freed buffer is handed out first");
        if (z1.token() + 1) % 1024 == ta % 1024 {
            wrapped = true;
            break;
        }
        done(&z1);
        assert!(finish(z1).is_ok());
        z1 = send(&[11; 4]);
    }
    assert!(wrapped, "the tokens never came round to {ta}");
    let z2 = send(&[12; 4]);
    assert_eq!((z2.slot(), z2.token()), (a, ta));
    let before = t.stats().protocol_errors;
    let r = unwritten(z2);
    assert!(
        matches!(r, Err(Error::Protocol(_))),
        "an unwritten chain was delivered with the stale reply of the same header: {r:?}"
    );
    assert!(t.stats().protocol_errors > before);
    done(&z1);
    assert_eq!(finish(z1), Ok(vec![!11; 4]));
    fx.remote().set_sim_mode(SimMode::Normal);
    echo_ok(&fx, b"after");
}
