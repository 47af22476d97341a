//! Faults: timeouts and late replies, pool exhaustion, hostile input, dropped replies, reset.

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{Fault, Fixture};
use fwipc_transport_api::{Error, Transfer, Transport};

use super::Verdict;
use crate::util::{
    assert_pool_full, dropped_input, echo, echo_ok, eventually, expected, finish, request,
    tagged_payload, Rng,
};

/// A call times out while the remote holds the reply; the buffer stays remote-owned (not reused)
/// while many more calls succeed; the late reply is then dropped and counted, never delivered to a
/// newer transfer, and the pool ends full. Runs in every completion mode.
pub fn timeout_late_reply<F: Fixture>() -> Verdict {
    for &mode in F::modes() {
        let fx = F::setup(mode);
        let t = fx.transport();
        let mut rng = Rng::new(4);
        fx.remote().set_fault(Fault::Hold);
        let stuck = tagged_payload(0xdead, 16, &mut rng);
        let start = Instant::now();
        let r = echo(&fx, &stuck, fx.short_timeout());
        assert_eq!(
            r,
            Err(Error::Timeout),
            "{}: held request did not time out ({mode:?})",
            F::NAME
        );
        assert!(
            start.elapsed() < fx.short_timeout() + Duration::from_secs(1),
            "{}: timeout took {:?}",
            F::NAME,
            start.elapsed()
        );
        let s = t.stats();
        assert!(s.timed_out >= 1, "{}: timeout not counted", F::NAME);
        assert!(
            s.pool_free < s.pool_capacity,
            "{}: the remote-owned buffer was put back on the free list",
            F::NAME
        );
        fx.remote().set_fault(Fault::None);
        // Cycle through more transfers than there are buffers and tokens in the pool: none may
        // reuse the stuck buffer, and all must get their own replies.
        let n = (t.max_msg() * 2 + 8).min(600);
        for i in 0..n {
            echo_ok(&fx, &tagged_payload(i as u32, 1 + rng.below(24), &mut rng));
        }
        let s = t.stats();
        assert!(
            s.pool_free < s.pool_capacity,
            "{}: stuck buffer reused before the remote returned it",
            F::NAME
        );
        late_reply_dropped(&fx, s.late_replies, &mut rng, "the timed-out call");
    }
    Verdict::Pass
}

/// Release the remote's held replies while calls are in progress (they must still get their own
/// replies), keep calling until the late reply was dropped and counted (a polled transport takes
/// it in only when someone polls), then the pool must be full and the channel still work.
fn late_reply_dropped<F: Fixture>(fx: &F, late_before: u64, rng: &mut Rng, whose: &str) {
    let t = fx.transport();
    fx.remote().release();
    for i in 0..16 {
        echo_ok(fx, &tagged_payload(0x1000 + i, 12, rng));
    }
    let mut tag = 0x3000;
    let counted = eventually(fx.reply_timeout(), || {
        tag += 1;
        echo_ok(fx, &tagged_payload(tag, 8, rng));
        t.stats().late_replies > late_before
    });
    assert!(
        counted,
        "{}: {whose}'s late reply was not counted ({:?})",
        F::NAME,
        t.stats()
    );
    assert_pool_full(fx, "after the late reply returned the buffer");
    echo_ok(fx, &tagged_payload(7, 8, rng));
}

/// A [`Transfer`] dropped while the remote still holds its request (an early return or `?`
/// between send and finish) ends the transfer as `Cancelled`: the remote-owned buffer is not
/// reused while the remote holds it, later calls get their own replies, the late reply is dropped
/// and counted, and the pool ends full. Runs in every completion mode.
pub fn dropped_transfer<F: Fixture>() -> Verdict {
    for &mode in F::modes() {
        let fx = F::setup(mode);
        let t = fx.transport();
        let mut rng = Rng::new(12);
        fx.remote().set_fault(Fault::Hold);
        let late_before = t.stats().late_replies;
        let held = tagged_payload(0xd0d0, 16, &mut rng);
        {
            let x = Transfer::send(t, &request(&fx, &held))
                .unwrap_or_else(|e| panic!("{}: send failed: {e} ({mode:?})", F::NAME));
            assert_eq!(
                x.poll_done(),
                Ok(false),
                "{}: held request completed",
                F::NAME
            );
        } // dropped here, unfinished
        let s = t.stats();
        assert!(
            s.pool_free < s.pool_capacity,
            "{}: a dropped transfer's remote-owned buffer went back to the free list ({mode:?})",
            F::NAME
        );
        fx.remote().set_fault(Fault::None);
        for i in 0..8 {
            echo_ok(
                &fx,
                &tagged_payload(0x2000 + i, 1 + rng.below(24), &mut rng),
            );
        }
        late_reply_dropped(&fx, late_before, &mut rng, "the dropped transfer");
    }
    Verdict::Pass
}

/// With the remote holding everything, sends succeed until the pool (or the remote's quota) is
/// exhausted, then fail with `Busy`/`Retry` without blocking; releasing recovers every transfer.
pub fn pool_exhaustion<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let t = fx.transport();
    let mut rng = Rng::new(5);
    fx.remote().set_fault(Fault::Hold);
    let mut tickets = Vec::new();
    let mut payloads = Vec::new();
    let limit = t.max_msg() + 1;
    let refused = loop {
        let p = tagged_payload(tickets.len() as u32, 8, &mut rng);
        let start = Instant::now();
        match t.send(&request(&fx, &p)) {
            Ok(ticket) => {
                tickets.push(ticket);
                payloads.push(p);
                assert!(
                    tickets.len() <= t.max_msg(),
                    "{}: more than max_msg sends accepted",
                    F::NAME
                );
            }
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_millis(500),
                    "{}: refused send blocked",
                    F::NAME
                );
                break e;
            }
        }
        assert!(tickets.len() < limit, "{}: never refused", F::NAME);
    };
    assert!(
        matches!(refused, Error::Busy | Error::Retry),
        "{}: exhaustion gave {refused:?}",
        F::NAME
    );
    assert!(!tickets.is_empty(), "{}: no send accepted", F::NAME);
    assert!(
        t.stats().busy >= 1 || refused == Error::Retry,
        "{}: busy refusal not counted",
        F::NAME
    );
    fx.remote().set_fault(Fault::None);
    fx.remote().release();
    for (i, (ticket, p)) in tickets.into_iter().zip(&payloads).enumerate() {
        let got = finish(&fx, ticket, fx.reply_timeout())
            .unwrap_or_else(|e| panic!("{}: held transfer {i} failed after release: {e}", F::NAME));
        assert_eq!(
            got,
            expected(p),
            "{}: reply {i} mismatched after release",
            F::NAME
        );
    }
    assert_pool_full(&fx, "after exhaustion recovered");
    echo_ok(&fx, &tagged_payload(1, 8, &mut rng));
    Verdict::Pass
}

/// Every corrupting fault, then random garbage injected as remote input: no panic, no wrong reply
/// delivered, the drops are counted, and ordinary calls work afterwards.
pub fn hostile_input<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let t = fx.transport();
    let mut rng = Rng::new(6);
    let before = dropped_input(&t.stats());
    for fault in [
        Fault::WrongToken,
        Fault::CorruptLength,
        Fault::CorruptHeader,
        Fault::Duplicate,
    ] {
        let pre = t.stats();
        fx.remote().set_fault(fault);
        let mut ok = 0u64;
        for i in 0..4 {
            let p = tagged_payload(i, 8 + rng.below(8), &mut rng);
            match echo(&fx, &p, fx.short_timeout()) {
                Ok(got) => {
                    assert_eq!(
                        got,
                        expected(&p),
                        "{}: {fault:?} delivered a wrong reply",
                        F::NAME
                    );
                    ok += 1;
                }
                Err(e) => assert!(
                    matches!(e, Error::Timeout | Error::Protocol(_)),
                    "{}: {fault:?} gave unexpected error {e:?}",
                    F::NAME
                ),
            }
        }
        fx.remote().set_fault(Fault::None);
        // The transport must have *noticed* every corruption, not just survived it.
        let noticed = eventually(fx.reply_timeout(), || {
            let s = t.stats();
            match fault {
                Fault::Duplicate => {
                    s.duplicate_replies + s.unknown_replies
                        > pre.duplicate_replies + pre.unknown_replies
                }
                _ => dropped_input(&s) > dropped_input(&pre),
            }
        });
        assert!(
            noticed,
            "{}: {fault:?} replies were not detected and counted ({:?})",
            F::NAME,
            t.stats()
        );
        if fault == Fault::Duplicate {
            assert_eq!(
                ok,
                4,
                "{}: a duplicated reply made the original call fail",
                F::NAME
            );
            assert_eq!(
                t.stats().completed - pre.completed,
                4,
                "{}: duplicate replies counted as completions",
                F::NAME
            );
        }
        echo_ok(&fx, &tagged_payload(0x55, 8, &mut rng));
    }
    for _ in 0..300 {
        let mut g = vec![0u8; rng.below(300)];
        rng.fill(&mut g);
        fx.remote().inject_garbage(&g);
    }
    let counted = eventually(fx.reply_timeout(), || dropped_input(&t.stats()) > before);
    assert!(
        counted,
        "{}: hostile input not counted ({:?})",
        F::NAME,
        t.stats()
    );
    for i in 0..20 {
        echo_ok(&fx, &tagged_payload(i, 4 + rng.below(20), &mut rng));
    }
    t.shutdown()
        .unwrap_or_else(|e| panic!("{}: shutdown after hostile input failed: {e}", F::NAME));
    assert_pool_full(&fx, "after hostile input and shutdown");
    Verdict::Pass
}

/// The remote swallows a request: the call times out within its deadline, later calls work, and
/// shutdown takes the swallowed buffer back.
pub fn dropped_reply<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let t = fx.transport();
    let mut rng = Rng::new(7);
    fx.remote().set_fault(Fault::Drop);
    let start = Instant::now();
    let r = echo(&fx, &tagged_payload(1, 8, &mut rng), fx.short_timeout());
    let took = start.elapsed();
    assert_eq!(
        r,
        Err(Error::Timeout),
        "{}: dropped reply gave {r:?}",
        F::NAME
    );
    assert!(
        took >= fx.short_timeout(),
        "{}: timed out early ({took:?})",
        F::NAME
    );
    assert!(
        took < fx.short_timeout() + Duration::from_secs(1),
        "{}: timeout overshot ({took:?})",
        F::NAME
    );
    fx.remote().set_fault(Fault::None);
    echo_ok(&fx, &tagged_payload(2, 8, &mut rng));
    t.shutdown()
        .unwrap_or_else(|e| panic!("{}: shutdown failed: {e}", F::NAME));
    assert_pool_full(&fx, "after shutdown reclaimed the dropped buffer");
    Verdict::Pass
}

/// The remote loses its state with transfers in flight: every waiter ends with an error within
/// its deadline (no hang, no panic), shutdown is clean, and a fresh pair works.
pub fn reset_mid_flight<F: Fixture>() -> Verdict {
    {
        let fx = F::setup(F::modes()[0]);
        let t = fx.transport();
        fx.remote().set_fault(Fault::Hold);
        let timeout = fx.short_timeout() * 4;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..3u32)
                .map(|i| {
                    let fx = &fx;
                    s.spawn(move || {
                        let start = Instant::now();
                        let r = echo(fx, &i.to_le_bytes(), timeout);
                        (r, start.elapsed())
                    })
                })
                .collect();
            assert!(
                eventually(fx.reply_timeout(), || fx.remote().received() >= 3),
                "{}: requests not received",
                F::NAME
            );
            fx.remote().reset_remote();
            for h in hs {
                let (r, took) = h.join().expect("waiter panicked");
                assert!(
                    r.is_err(),
                    "{}: a transfer lost by the remote reset completed with {r:?}",
                    F::NAME
                );
                assert!(
                    took < timeout + Duration::from_secs(1),
                    "{}: waiter hung for {took:?}",
                    F::NAME
                );
            }
        });
        t.shutdown()
            .unwrap_or_else(|e| panic!("{}: shutdown after reset failed: {e}", F::NAME));
        assert_pool_full(&fx, "after reset and shutdown");
    }
    let fx = F::setup(F::modes()[0]);
    echo_ok(&fx, b"after reset");
    Verdict::Pass
}
