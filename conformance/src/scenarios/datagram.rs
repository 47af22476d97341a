//! The datagram scenarios (docs/datagram.md): one-way ordering, RX hold/release under
//! exhaustion, zero-copy buffer ownership, and the name service. Each runs only against a backend
//! whose [`fwipc_transport_api::Caps`] claims the feature, and is skipped with the reason
//! otherwise.

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{DatagramPeer, Fixture};
use fwipc_transport_api::{
    Bind, Datagram, Endpoint, EndpointEvent, EndpointName, Error, RxAction, RxHold, Transport,
};

use super::Verdict;
use crate::util::{eventually, tagged_payload, Rng};

/// The datagram pair of a fixture whose caps claim `one_way`; panics if the fixture lacks it.
fn pair<F: Fixture>(fx: &F) -> (&dyn Datagram, &dyn DatagramPeer) {
    fx.datagram().unwrap_or_else(|| {
        panic!(
            "{}: Caps::one_way is set but Fixture::datagram() is None",
            F::NAME
        )
    })
}

fn tag_of(data: &[u8]) -> u32 {
    let mut t = [0u8; 4];
    let n = data.len().min(4);
    t[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(t)
}

fn is_backpressure(e: &Error) -> bool {
    matches!(e, Error::Busy | Error::Retry)
}

/// Everything queued for `ep` right now, released at once, as (source, payload).
fn drain(d: &dyn Datagram, ep: &Endpoint, out: &mut Vec<(u32, Vec<u8>)>) {
    d.poll_rx(ep, usize::MAX, &mut |rx| {
        out.push((rx.src, rx.data.to_vec()));
        RxAction::Release
    })
    .expect("poll_rx on a bound endpoint");
}

/// `f` until it succeeds, running `relieve` (e.g. draining the other side) after each
/// back-pressure answer; panics on another error or after `timeout`.
fn retrying(
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

/// One-way messages keep their order both ways: 200 tagged datagrams of random sizes from a
/// local endpoint to the remote one and 200 back, each arriving exactly once, in order, with the
/// right source address; the pull queue ([`Datagram::recv`]) keeps the order too.
pub fn one_way_ordering<F: Fixture>() -> Verdict {
    const N: u32 = 200;
    let fx = F::setup(F::modes()[0]);
    let caps = fx.transport().caps();
    if !caps.one_way {
        assert!(
            fx.datagram().is_none(),
            "{}: the fixture offers a datagram side that Caps::one_way does not claim",
            F::NAME
        );
        return Verdict::NotApplicable("no one-way datagrams (Caps::one_way)");
    }
    let (d, peer) = pair(&fx);
    let ep = d
        .bind(Bind::Any)
        .unwrap_or_else(|e| panic!("{}: bind failed: {e}", F::NAME));
    let max = caps.max_msg_size.min(40);
    let mut rng = Rng::new(21);
    let before = d.datagram_stats();

    let out: Vec<Vec<u8>> = (0..N)
        .map(|i| tagged_payload(i, 4 + rng.below(max - 3), &mut rng))
        .collect();
    let mut got = Vec::new();
    for p in &out {
        retrying(
            F::NAME,
            fx.reply_timeout(),
            || d.send_to(&ep, peer.addr(), p),
            || got.extend(peer.take_received()),
        );
    }
    let all = eventually(fx.reply_timeout(), || {
        got.extend(peer.take_received());
        got.len() >= out.len()
    });
    assert!(
        all,
        "{}: remote got {} of {N} datagrams",
        F::NAME,
        got.len()
    );
    let want: Vec<(u32, Vec<u8>)> = out.iter().map(|p| (ep.addr(), p.clone())).collect();
    assert!(
        got == want,
        "{}: remote did not get the datagrams exactly once, in order, from {:#x} (tags {:?})",
        F::NAME,
        ep.addr(),
        got.iter().map(|(_, p)| tag_of(p)).collect::<Vec<_>>()
    );

    let back: Vec<Vec<u8>> = (0..N)
        .map(|i| tagged_payload(i, 4 + rng.below(max - 3), &mut rng))
        .collect();
    let mut rx = Vec::new();
    for p in &back {
        retrying(
            F::NAME,
            fx.reply_timeout(),
            || peer.send(ep.addr(), p),
            || drain(d, &ep, &mut rx),
        );
    }
    let all = eventually(fx.reply_timeout(), || {
        drain(d, &ep, &mut rx);
        rx.len() >= back.len()
    });
    assert!(all, "{}: got {} of {N} datagrams", F::NAME, rx.len());
    let want: Vec<(u32, Vec<u8>)> = back.iter().map(|p| (peer.addr(), p.clone())).collect();
    assert!(
        rx == want,
        "{}: datagrams from the remote not delivered exactly once, in order (tags {:?})",
        F::NAME,
        rx.iter().map(|(_, p)| tag_of(p)).collect::<Vec<_>>()
    );

    // The pull queue: same order, copied out.
    for i in 0..3u32 {
        peer.send(ep.addr(), &(1000 + i).to_le_bytes())
            .unwrap_or_else(|e| panic!("{}: remote send failed: {e}", F::NAME));
    }
    let mut buf = vec![0u8; caps.max_msg_size];
    let mut pulled = Vec::new();
    let all = eventually(fx.reply_timeout(), || {
        while let Some(info) = d.recv(&ep, &mut buf).expect("recv") {
            assert_eq!(info.src, peer.addr(), "{}: recv source", F::NAME);
            pulled.push(tag_of(&buf[..info.len]));
        }
        pulled.len() >= 3
    });
    assert!(
        all && pulled == [1000, 1001, 1002],
        "{}: recv gave {pulled:?}",
        F::NAME
    );
    assert_eq!(
        d.recv(&ep, &mut buf[..0]),
        Err(Error::TooLarge),
        "{}: recv into a buffer smaller than max_msg_size",
        F::NAME
    );

    let after = d.datagram_stats();
    assert!(
        after.sent >= before.sent + u64::from(N) && after.received >= before.received + 203,
        "{}: datagram counters did not advance ({before:?} -> {after:?})",
        F::NAME
    );
    d.unbind(ep)
        .unwrap_or_else(|e| panic!("{}: unbind failed: {e}", F::NAME));
    Verdict::Pass
}

/// RX hold/release under exhaustion: the local side holds every datagram it is shown until the
/// remote meets back-pressure. Delivery then stops (datagrams not yet delivered wait on the
/// remote's side or in the ring), held data survives past the callback, a double release is
/// refused and counted, one release admits exactly one more datagram, and releasing everything
/// lets the flow resume until every datagram sent arrived exactly once, in order.
pub fn rx_hold_exhaustion<F: Fixture>() -> Verdict {
    const LIMIT: u32 = 10_000;
    const MORE: u32 = 40;
    let fx = F::setup(F::modes()[0]);
    let caps = fx.transport().caps();
    if !caps.rx_hold {
        return Verdict::NotApplicable("no held receive buffers (Caps::rx_hold)");
    }
    let (d, peer) = pair(&fx);
    let ep = d
        .bind(Bind::Any)
        .unwrap_or_else(|e| panic!("{}: bind failed: {e}", F::NAME));
    let before = d.datagram_stats();
    // Every delivery's tag, in order, and the handles still held.
    let mut tags: Vec<u32> = Vec::new();
    let mut held: Vec<RxHold> = Vec::new();
    let hold_all = |tags: &mut Vec<u32>, held: &mut Vec<RxHold>| {
        d.poll_rx(&ep, usize::MAX, &mut |rx| {
            tags.push(tag_of(rx.data));
            held.push(rx.hold);
            RxAction::Hold
        })
        .expect("poll_rx")
    };
    // No new delivery for a quiet period: the local side is stalled.
    let settle = |tags: &mut Vec<u32>, held: &mut Vec<RxHold>| {
        let mut quiet = 0;
        while quiet < 20 {
            if hold_all(tags, held) == 0 {
                quiet += 1;
            } else {
                quiet = 0;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };

    // Fill every receive buffer (and whatever the remote can queue behind them).
    let mut sent = 0u32;
    loop {
        match peer.send(ep.addr(), &sent.to_le_bytes()) {
            Ok(()) => sent += 1,
            Err(e) if is_backpressure(&e) => break,
            Err(e) => panic!("{}: remote send failed: {e}", F::NAME),
        }
        hold_all(&mut tags, &mut held);
        assert!(
            sent < LIMIT,
            "{}: {LIMIT} datagrams held and the remote never saw back-pressure",
            F::NAME
        );
    }
    settle(&mut tags, &mut held);
    let h = tags.len() as u32;
    assert!(h >= 1, "{}: no receive buffer at all", F::NAME);
    assert!(h <= sent, "{}: {h} delivered of {sent} sent", F::NAME);
    assert_eq!(
        tags,
        (0..h).collect::<Vec<_>>(),
        "{}: datagrams lost or reordered under exhaustion",
        F::NAME
    );
    let s = d.datagram_stats();
    assert_eq!(s.held, u64::from(h), "{}: held counter ({s:?})", F::NAME);
    assert!(
        s.rx_backpressure > before.rx_backpressure,
        "{}: back-pressure not counted ({s:?})",
        F::NAME
    );
    assert!(
        peer.send(ep.addr(), &sent.to_le_bytes())
            .is_err_and(|e| is_backpressure(&e)),
        "{}: the remote could send with every receive buffer held",
        F::NAME
    );

    // Held data is intact past the callback.
    let mut seen = None;
    d.with_held(held[held.len() - 1], &mut |b| seen = Some(tag_of(b)))
        .unwrap_or_else(|e| panic!("{}: with_held failed: {e}", F::NAME));
    assert_eq!(seen, Some(h - 1), "{}: held data changed", F::NAME);

    // One release: accepted once, refused the second time, counted.
    let first = held.remove(0);
    d.release_rx(first)
        .unwrap_or_else(|e| panic!("{}: release failed: {e}", F::NAME));
    assert_eq!(
        d.release_rx(first),
        Err(Error::InvalidArgument),
        "{}: a double release was accepted",
        F::NAME
    );
    assert_eq!(
        d.with_held(first, &mut |_| ()),
        Err(Error::InvalidArgument),
        "{}: a released buffer is still readable",
        F::NAME
    );
    let s = d.datagram_stats();
    assert_eq!(
        (s.double_releases, s.held),
        (before.double_releases + 1, u64::from(h) - 1),
        "{}: release accounting ({s:?})",
        F::NAME
    );

    // The freed buffer admits exactly one more datagram: the next in order.
    if h == sent {
        retrying(
            F::NAME,
            fx.reply_timeout(),
            || peer.send(ep.addr(), &sent.to_le_bytes()),
            || (),
        );
        sent += 1;
    }
    let one = eventually(fx.reply_timeout(), || {
        hold_all(&mut tags, &mut held);
        tags.len() as u32 > h
    });
    assert!(one, "{}: nothing delivered after a release", F::NAME);
    settle(&mut tags, &mut held);
    assert_eq!(
        &tags[h as usize..],
        &[h],
        "{}: one released buffer must admit exactly the next datagram",
        F::NAME
    );

    // Release everything: the flow resumes and nothing was lost.
    for hd in held.drain(..) {
        d.release_rx(hd)
            .unwrap_or_else(|e| panic!("{}: release failed: {e}", F::NAME));
    }
    let mut rest = Vec::new();
    let total = sent + MORE;
    for next in sent..total {
        retrying(
            F::NAME,
            fx.reply_timeout(),
            || peer.send(ep.addr(), &next.to_le_bytes()),
            || drain(d, &ep, &mut rest),
        );
    }
    let all = eventually(fx.reply_timeout(), || {
        drain(d, &ep, &mut rest);
        tags.len() + rest.len() >= total as usize
    });
    tags.extend(rest.iter().map(|(_, p)| tag_of(p)));
    assert!(all, "{}: {} of {total} after release", F::NAME, tags.len());
    assert_eq!(
        tags,
        (0..total).collect::<Vec<_>>(),
        "{}: datagrams lost, duplicated or reordered across hold/release",
        F::NAME
    );
    assert_eq!(d.datagram_stats().held, 0, "{}: holds left", F::NAME);
    d.unbind(ep)
        .unwrap_or_else(|e| panic!("{}: unbind failed: {e}", F::NAME));
    Verdict::Pass
}

/// Zero-copy send: a loaned buffer written in place arrives byte for byte; loans are bounded
/// (`Busy`, never an allocation) and a dropped loan returns its buffer; a refused send hands the
/// loan back intact. (That a sent loan cannot be touched is a compile-time property: see the
/// `compile_fail` example on [`Datagram::send_loan`].)
pub fn zero_copy_ownership<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let caps = fx.transport().caps();
    if !caps.zero_copy {
        return Verdict::NotApplicable("no zero-copy send (Caps::zero_copy)");
    }
    let (d, peer) = pair(&fx);
    let ep = d
        .bind(Bind::Any)
        .unwrap_or_else(|e| panic!("{}: bind failed: {e}", F::NAME));
    let pattern = |i: usize| (i * 7 + 3) as u8;
    let n = caps.max_msg_size.min(200);

    let mut loan = d
        .loan(&ep)
        .unwrap_or_else(|e| panic!("{}: loan failed: {e}", F::NAME));
    assert!(
        loan.capacity() >= n,
        "{}: loan smaller than max_msg_size",
        F::NAME
    );
    assert_eq!(
        loan.set_len(loan.capacity() + 1),
        Err(Error::TooLarge),
        "{}: loan length beyond capacity",
        F::NAME
    );
    loan.with_mut(|b| {
        b.iter_mut()
            .take(n)
            .enumerate()
            .for_each(|(i, x)| *x = pattern(i))
    });
    loan.set_len(n).expect("length within capacity");

    // A refused send (stale endpoint) hands the loan back, still ours.
    let stale = Endpoint::new(ep.index(), ep.generation().wrapping_add(1000), ep.addr());
    let (e, mut loan) = match d.send_loan(&stale, peer.addr(), loan) {
        Err(r) => r,
        Ok(()) => panic!("{}: send_loan on a stale endpoint succeeded", F::NAME),
    };
    assert_eq!(e, Error::InvalidArgument, "{}: stale endpoint", F::NAME);
    assert_eq!(loan.len(), n, "{}: returned loan lost its length", F::NAME);
    loan.with_mut(|b| b[0] = 0xa5);
    d.send_loan(&ep, peer.addr(), loan)
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("{}: send_loan failed: {e}", F::NAME));
    let mut got = Vec::new();
    let ok = eventually(fx.reply_timeout(), || {
        got.extend(peer.take_received());
        !got.is_empty()
    });
    assert!(ok, "{}: zero-copy datagram never arrived", F::NAME);
    let want: Vec<u8> = (0..n)
        .map(|i| if i == 0 { 0xa5 } else { pattern(i) })
        .collect();
    assert_eq!(
        got,
        vec![(ep.addr(), want)],
        "{}: zero-copy payload",
        F::NAME
    );

    // Loans are bounded and come back when dropped unsent.
    let mut loans = Vec::new();
    let limit = caps.max_msg + 64;
    let err = loop {
        match d.loan(&ep) {
            Ok(l) => loans.push(l),
            Err(e) => break e,
        }
        assert!(loans.len() <= limit, "{}: loans never ran out", F::NAME);
    };
    assert!(
        is_backpressure(&err) && !loans.is_empty(),
        "{}: exhausted loans gave {err:?} after {}",
        F::NAME,
        loans.len()
    );
    let k = loans.len();
    loans.clear();
    for _ in 0..k {
        loans.push(
            d.loan(&ep)
                .unwrap_or_else(|e| panic!("{}: dropped loans not returned: {e}", F::NAME)),
        );
    }
    drop(loans);
    d.unbind(ep)
        .unwrap_or_else(|e| panic!("{}: unbind failed: {e}", F::NAME));
    Verdict::Pass
}

/// The name service: a remote announce and destroy appear as [`EndpointEvent`]s, and binding and
/// unbinding a named local endpoint announces its creation and destruction to the remote.
pub fn name_service<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let caps = fx.transport().caps();
    if !caps.name_service {
        return Verdict::NotApplicable("no name service (Caps::name_service)");
    }
    let (d, peer) = pair(&fx);
    let remote = EndpointName::new(b"fwipc-remote-svc").expect("valid name");
    let local = EndpointName::new(b"fwipc-local-svc").expect("valid name");
    while d.next_event().is_some() {}

    let next = |want: EndpointEvent| {
        let mut seen = Vec::new();
        let ok = eventually(fx.reply_timeout(), || {
            if let Some(ev) = d.next_event() {
                seen.push(ev);
            }
            seen.contains(&want)
        });
        assert!(ok, "{}: expected {want:?}, saw {seen:?}", F::NAME);
    };
    let raddr = peer
        .announce(remote.as_bytes())
        .unwrap_or_else(|| panic!("{}: the remote cannot announce", F::NAME));
    next(EndpointEvent::Announced {
        name: remote,
        addr: raddr,
    });

    let _ = peer.take_announcements();
    let ep = d
        .bind(Bind::Name(local.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: bind by name failed: {e}", F::NAME));
    let addr = ep.addr();
    let mut ann = Vec::new();
    let ok = eventually(fx.reply_timeout(), || {
        ann.extend(peer.take_announcements());
        ann.contains(&(local, addr, false))
    });
    assert!(ok, "{}: bind not announced: {ann:?}", F::NAME);
    d.unbind(ep)
        .unwrap_or_else(|e| panic!("{}: unbind failed: {e}", F::NAME));
    let ok = eventually(fx.reply_timeout(), || {
        ann.extend(peer.take_announcements());
        ann.contains(&(local, addr, true))
    });
    assert!(ok, "{}: unbind not announced: {ann:?}", F::NAME);

    assert!(
        peer.destroy(raddr),
        "{}: the remote cannot destroy",
        F::NAME
    );
    next(EndpointEvent::Destroyed {
        name: remote,
        addr: raddr,
    });
    Verdict::Pass
}
