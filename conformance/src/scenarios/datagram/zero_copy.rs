//! Zero-copy send: loan ownership.

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, Endpoint, Error, Transport};

use super::{is_backpressure, pair};
use crate::scenarios::Verdict;
use crate::util::eventually;

/// Zero-copy send: a loaned buffer written in place arrives byte for byte; loans are bounded
/// (`Busy`, never an allocation) and a dropped loan returns its buffer; a refused send hands the
/// loan back intact. (That a sent loan cannot be touched is a compile-time property: see the
/// `compile_fail` example on [`Datagram::send_loan`](fwipc_transport_api::Datagram::send_loan).)
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
    // In place: a pool loan through a plain slice, a loan of remote-reachable memory only
    // through `write` (no reference into it).
    let data: Vec<u8> = (0..n).map(pattern).collect();
    if loan.is_shared() {
        assert_eq!(
            loan.with_mut(|b| b.len()),
            Err(Error::NotSupported),
            "{}: a shared loan exposed a slice",
            F::NAME
        );
        loan.write(0, &data)
            .unwrap_or_else(|e| panic!("{}: write to a loan failed: {e}", F::NAME));
    } else {
        loan.with_mut(|b| b[..n].copy_from_slice(&data))
            .unwrap_or_else(|e| panic!("{}: with_mut on a pool loan failed: {e}", F::NAME));
    }
    assert_eq!(
        loan.write(loan.capacity(), &[0]),
        Err(Error::TooLarge),
        "{}: write beyond the loan",
        F::NAME
    );
    loan.set_len(n).expect("length within capacity");

    // A refused send (stale endpoint) hands the loan back, still ours.
    let stale = Endpoint::new(ep.index(), ep.generation().wrapping_add(1000), ep.addr());
    let (e, mut loan) = match d.send_loan(&stale, peer.addr(), loan) {
        Err(r) => r,
        Ok(()) => panic!("{}: send_loan on a stale endpoint succeeded", F::NAME),
    };
    assert_eq!(e, Error::InvalidArgument, "{}: stale endpoint", F::NAME);
    assert_eq!(loan.len(), n, "{}: returned loan lost its length", F::NAME);
    loan.write(0, &[0xa5])
        .unwrap_or_else(|e| panic!("{}: write to a returned loan failed: {e}", F::NAME));
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
