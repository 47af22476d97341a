//! Ordering on a receive-only datagram side (SCMI's P2A endpoints: `Caps::one_way` not claimed).

use fwipc_transport_api::fixture::{DatagramPeer, Fixture};
use fwipc_transport_api::{Bind, Datagram, Error, Transport};

use super::{remote_sends_all, retrying, tag_of};
use crate::scenarios::Verdict;
use crate::util::{eventually, tagged_payload, Rng};

/// The remote's datagrams to a bound endpoint arrive exactly once, in order, byte for byte,
/// through the poll path and then through the pull queue; every one carries the same source (one
/// remote), and the local side's one-way send is refused with `NotSupported`.
pub(super) fn receive_only_ordering<F: Fixture>(
    fx: &F,
    d: &dyn Datagram,
    peer: &dyn DatagramPeer,
) -> Verdict {
    const N: u32 = 200;
    let caps = fx.transport().caps();
    let ep = d
        .bind(Bind::Any)
        .unwrap_or_else(|e| panic!("{}: bind failed: {e}", F::NAME));
    assert_eq!(
        d.send_to(&ep, peer.addr(), b"x"),
        Err(Error::NotSupported),
        "{}: one-way send without Caps::one_way",
        F::NAME
    );
    let before = d.datagram_stats();
    let max = caps.max_msg_size.min(40);
    let mut rng = Rng::new(22);
    let sent: Vec<Vec<u8>> = (0..N)
        .map(|i| tagged_payload(i, 4 + rng.below(max - 3), &mut rng))
        .collect();
    let (polled, pulled_part) = sent.split_at(sent.len() / 2);

    let mut rx = remote_sends_all(fx, d, peer, &ep, polled);

    // The pull queue, with what arrives meanwhile kept in order.
    let mut buf = vec![0u8; caps.max_msg_size];
    let mut pull = |rx: &mut Vec<(u32, Vec<u8>)>| {
        while let Some(info) = d.recv(&ep, &mut buf).expect("recv on a bound endpoint") {
            rx.push((info.src, buf[..info.len].to_vec()));
        }
    };
    for p in pulled_part {
        retrying(
            F::NAME,
            fx.reply_timeout(),
            || peer.send(ep.addr(), p),
            || pull(&mut rx),
        );
    }
    let all = eventually(fx.reply_timeout(), || {
        pull(&mut rx);
        rx.len() >= sent.len()
    });
    assert!(all, "{}: got {} of {N} datagrams", F::NAME, rx.len());
    let src = rx[0].0;
    assert!(
        rx.iter().all(|(s, _)| *s == src),
        "{}: one remote, several sources",
        F::NAME
    );
    let got: Vec<Vec<u8>> = rx.into_iter().map(|(_, p)| p).collect();
    assert!(
        got == sent,
        "{}: datagrams from the remote not delivered exactly once, in order (tags {:?})",
        F::NAME,
        got.iter().map(|p| tag_of(p)).collect::<Vec<_>>()
    );
    let after = d.datagram_stats();
    assert!(
        after.received >= before.received + u64::from(N) && after.sent == before.sent,
        "{}: datagram counters ({before:?} -> {after:?})",
        F::NAME
    );
    d.unbind(ep)
        .unwrap_or_else(|e| panic!("{}: unbind failed: {e}", F::NAME));
    Verdict::Pass
}
