//! One-way ordering, both ways, and the pull queue.

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, Error, Transport};

use super::receive_only::receive_only_ordering;
use super::{pair, remote_sends_all, retrying, tag_of};
use crate::scenarios::Verdict;
use crate::util::{eventually, tagged_payload, Rng};

/// One-way messages keep their order both ways: 200 tagged datagrams of random sizes from a
/// local endpoint to the remote one and 200 back, each arriving exactly once, in order, with the
/// right source address; the pull queue
/// ([`Datagram::recv`](fwipc_transport_api::Datagram::recv)) keeps the order too. A backend
/// whose datagram side is receive-only (a fixture datagram pair without `Caps::one_way`: SCMI
/// notifications) runs the receive half: 200 from the remote, through the poll path and the pull
/// queue, and a refused one-way send.
pub fn one_way_ordering<F: Fixture>() -> Verdict {
    const N: u32 = 200;
    let fx = F::setup(F::modes()[0]);
    let caps = fx.transport().caps();
    if !caps.one_way {
        // A receive-only datagram side (no one-way send): its receive order still counts.
        return match fx.datagram() {
            Some((d, peer)) => receive_only_ordering(&fx, d, peer),
            None => Verdict::NotApplicable("no one-way datagrams (Caps::one_way)"),
        };
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
    let rx = remote_sends_all(&fx, d, peer, &ep, &back);
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
