//! RX hold/release under exhaustion.

use std::time::Duration;

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, Error, RxAction, RxHold, Transport};

use super::{drain, is_backpressure, pair, retrying, tag_of};
use crate::scenarios::Verdict;
use crate::util::eventually;

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
