//! Ordinary messaging: round trips, FIFO ordering, concurrent senders, notifications.

use std::collections::HashSet;

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::Transport;

use super::Verdict;
use crate::util::{
    assert_pool_full, echo_ok, eventually, expected, finish, request, tagged_payload, Rng,
};

/// Echo round trips of every interesting size from 0 to `max_msg_size`, in every completion mode.
pub fn roundtrip<F: Fixture>() -> Verdict {
    for &mode in F::modes() {
        let fx = F::setup(mode);
        let max = fx.transport().max_msg_size();
        assert!(
            max >= 4,
            "{}: max_msg_size {max} too small for the suite",
            F::NAME
        );
        let mut sizes = vec![
            0,
            1,
            3,
            4,
            5,
            7,
            8,
            15,
            16,
            17,
            31,
            32,
            33,
            63,
            64,
            65,
            127,
            128,
            max - 1,
            max,
        ];
        sizes.retain(|&s| s <= max);
        sizes.dedup();
        let mut rng = Rng::new(1);
        let before = fx.transport().stats();
        for (i, &len) in sizes.iter().enumerate() {
            echo_ok(&fx, &tagged_payload(i as u32, len, &mut rng));
        }
        let after = fx.transport().stats();
        assert!(
            after.completed >= before.completed + sizes.len() as u64,
            "{}: completed counter did not advance ({before:?} -> {after:?})",
            F::NAME
        );
        assert_pool_full(&fx, "after round trips");
    }
    Verdict::Pass
}

/// One thread queues `max_msg` requests without waiting, then collects them: the remote must have
/// received them in send order and each reply must match its own request.
pub fn fifo_ordering<F: Fixture>() -> Verdict {
    for &mode in F::modes() {
        let fx = F::setup(mode);
        let t = fx.transport();
        let n = t.max_msg().min(64);
        let len = t.max_msg_size().min(32);
        let mut rng = Rng::new(2);
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| tagged_payload(i as u32, len, &mut rng))
            .collect();
        let _ = fx.remote().take_seen_tags();
        let received = fx.remote().received();
        let tickets: Vec<_> = payloads
            .iter()
            .map(|p| {
                t.send(&request(&fx, p))
                    .unwrap_or_else(|e| panic!("{}: send failed: {e}", F::NAME))
            })
            .collect();
        for (i, (ticket, p)) in tickets.into_iter().zip(&payloads).enumerate() {
            let got = finish(&fx, ticket, fx.reply_timeout()).unwrap_or_else(|e| {
                panic!("{}: request {i} failed in {mode:?} mode: {e}", F::NAME)
            });
            assert_eq!(
                got,
                expected(p),
                "{}: reply {i} does not match its request",
                F::NAME
            );
        }
        let seen = fx.remote().take_seen_tags();
        let want: Vec<u32> = (0..n as u32).collect();
        assert_eq!(
            seen,
            want,
            "{}: remote saw requests out of send order in {mode:?} mode",
            F::NAME
        );
        // Every answered request is counted too, not only held or dropped ones.
        assert_eq!(
            fx.remote().received() - received,
            n as u64,
            "{}: the remote's count of received requests in {mode:?} mode",
            F::NAME
        );
        assert_pool_full(&fx, "after ordering");
    }
    Verdict::Pass
}

/// Several threads call concurrently: every call completes exactly once with its own reply, the
/// remote sees each request exactly once, and per-thread order is kept.
pub fn concurrent_senders<F: Fixture>() -> Verdict {
    const THREADS: u32 = 4;
    const CALLS: u32 = 150;
    for &mode in F::modes() {
        let fx = F::setup(mode);
        let _ = fx.remote().take_seen_tags();
        let before = fx.transport().stats();
        std::thread::scope(|s| {
            for th in 0..THREADS {
                let fx = &fx;
                s.spawn(move || {
                    let mut rng = Rng::new(100 + th as u64);
                    let len = fx.transport().max_msg_size().min(48);
                    for i in 0..CALLS {
                        let p = tagged_payload((th << 16) | i, 4 + rng.below(len - 3), &mut rng);
                        echo_ok(fx, &p);
                    }
                });
            }
        });
        let seen = fx.remote().take_seen_tags();
        assert_eq!(
            seen.len(),
            (THREADS * CALLS) as usize,
            "{}: remote saw {} requests",
            F::NAME,
            seen.len()
        );
        let unique: HashSet<u32> = seen.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{}: a request was delivered twice",
            F::NAME
        );
        for th in 0..THREADS {
            let mine: Vec<u32> = seen
                .iter()
                .filter(|t| *t >> 16 == th)
                .map(|t| t & 0xffff)
                .collect();
            assert_eq!(
                mine,
                (0..CALLS).collect::<Vec<_>>(),
                "{}: thread {th}'s order not kept",
                F::NAME
            );
        }
        let after = fx.transport().stats();
        assert_eq!(
            after.completed - before.completed,
            (THREADS * CALLS) as u64,
            "{}: completion count wrong (lost or duplicated)",
            F::NAME
        );
        assert_pool_full(&fx, "after concurrent senders");
    }
    Verdict::Pass
}

/// Unsolicited messages from the remote arrive through `fetch_notification`, complete and in order.
pub fn notifications<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let t = fx.transport();
    if !t.caps().notifications {
        return Verdict::NotApplicable("transport has no notifications");
    }
    let mut rng = Rng::new(3);
    let sent: Vec<Vec<u8>> = (0..8u32)
        .map(|i| tagged_payload(i, 4 * (1 + rng.below(3)), &mut rng))
        .collect();
    for p in &sent {
        if !fx.remote().notify(p) {
            return Verdict::NotApplicable("remote cannot send notifications");
        }
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; t.max_msg_size().max(64)];
    let ok = eventually(fx.reply_timeout(), || {
        while let Ok(Some(n)) = t.fetch_notification(&mut buf) {
            got.push(buf[..n.len].to_vec());
        }
        got.len() >= sent.len()
    });
    assert!(
        ok,
        "{}: only {} of {} notifications arrived",
        F::NAME,
        got.len(),
        sent.len()
    );
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(
            g == s || g.starts_with(s) || g.ends_with(s),
            "{}: notification {i} payload mismatch: {g:02x?} vs {s:02x?}",
            F::NAME
        );
    }
    Verdict::Pass
}

/// The simulated remote's benchmark modes
/// ([`SimMode`](fwipc_transport_api::fixture::SimMode)): in `Stepped` and `SteppedPolling` the
/// remote answers only when the caller runs
/// [`RemoteControl::step`](fwipc_transport_api::fixture::RemoteControl::step) (and not before:
/// its own thread is idle), in `Spin` its own thread answers, and back in
/// `Normal` everything works as before. Polled mode; `NotApplicable` if the simulator has no
/// such modes.
pub fn sim_modes<F: Fixture>() -> Verdict {
    use fwipc_transport_api::fixture::SimMode;
    use fwipc_transport_api::{Completion, TxOutcome};
    if !F::modes().contains(&Completion::Polled) {
        return Verdict::NotApplicable("no polled mode");
    }
    let fx = F::setup(Completion::Polled);
    let remote = fx.remote();
    if !remote.set_sim_mode(SimMode::Stepped) {
        return Verdict::NotApplicable("the simulator has no stepped mode");
    }
    let t = fx.transport();
    let mut rng = Rng::new(7);
    let mut out = vec![0u8; t.max_msg_size()];
    for (round, mode) in [SimMode::Stepped, SimMode::SteppedPolling]
        .into_iter()
        .enumerate()
    {
        assert!(remote.set_sim_mode(mode), "{}: {mode:?} not taken", F::NAME);
        for i in 0..20u32 {
            let payload = tagged_payload(i + 50 * round as u32, 32, &mut rng);
            let ticket = t
                .send(&request(&fx, &payload).polled())
                .unwrap_or_else(|e| panic!("{}: {mode:?} send: {e:?}", F::NAME));
            // Nobody steps the remote yet: no reply may arrive on its own.
            std::thread::sleep(std::time::Duration::from_millis(if i == 0 {
                20
            } else {
                0
            }));
            assert!(
                !t.poll_done(&ticket).unwrap_or(true),
                "{}: a reply arrived in {mode:?} mode before the remote was stepped",
                F::NAME
            );
            let mut steps = 0;
            while !t
                .poll_done(&ticket)
                .unwrap_or_else(|e| panic!("{}: {mode:?} poll_done: {e:?}", F::NAME))
            {
                assert!(
                    steps < 64,
                    "{}: no reply after 64 inline remote steps ({mode:?})",
                    F::NAME
                );
                remote.step();
                steps += 1;
            }
            let n = t
                .fetch_response(&ticket, &mut out)
                .unwrap_or_else(|e| panic!("{}: {mode:?} fetch_response: {e:?}", F::NAME));
            t.mark_txdone(ticket, TxOutcome::Done);
            assert_eq!(
                out[..n],
                expected(&payload)[..],
                "{}: {mode:?} echo reply wrong",
                F::NAME
            );
        }
    }
    assert!(
        remote.set_sim_mode(SimMode::Spin),
        "{}: spin mode not taken",
        F::NAME
    );
    for i in 0..20u32 {
        echo_ok(&fx, &tagged_payload(100 + i, 32, &mut rng));
    }
    assert!(
        remote.set_sim_mode(SimMode::Normal),
        "{}: normal mode not taken",
        F::NAME
    );
    echo_ok(&fx, &tagged_payload(200, 32, &mut rng));
    Verdict::Pass
}
