//! A reply record names its transfer twice, by token and by buffer (docs/reliability.md,
//! "Hostile inputs tried per backend"): a record whose token is wrong must not complete another
//! transfer that happens to hold that token.

use std::time::Duration;

use fwipc_transport_api::fixture::{echo_reply, Fault, Fixture};
use fwipc_transport_api::{Completion, Request, Ticket, Transport, TxOutcome};

use crate::util::eventually;

use super::LoopbackFixture;

/// How long the remote thread gets to act.
const WAIT: Duration = Duration::from_secs(5);

fn echo_of(payload: &[u8]) -> Vec<u8> {
    let mut want = vec![0u8; payload.len()];
    echo_reply(payload, &mut want);
    want
}

/// One echo round trip; returns the token it used.
fn round_trip(fx: &LoopbackFixture, payload: &[u8]) -> u32 {
    let t = fx.transport();
    let tk = t
        .send(&Request::new(fx.echo_target(), payload))
        .expect("send");
    let token = tk.token();
    assert!(
        eventually(WAIT, || t.poll_done(&tk) == Ok(true)),
        "no reply"
    );
    let mut out = [0u8; 64];
    let n = t.fetch_response(&tk, &mut out).expect("fetch");
    assert_eq!(&out[..n], &echo_of(payload)[..]);
    t.mark_txdone(tk, TxOutcome::Done);
    token
}

/// Transfer A waits on a remote that holds its request. The remote then answers another
/// transfer, B, under `WrongToken` (its record carries B's token `^ 0x80`), and B's token was
/// chosen so that the flipped one is A's. The record must be refused (counted as a protocol
/// error), A must stay in flight, and when the remote lets A go, A gets its own echo. Before the
/// record named its buffer, A completed at once with its own request bytes, never echoed.
#[test]
fn a_flipped_token_does_not_complete_the_transfer_that_holds_it() {
    let fx = LoopbackFixture::setup(Completion::Polled);
    let t = fx.transport();
    fx.remote().set_fault(Fault::Hold);
    let a: Ticket = t
        .send(&Request::new(fx.echo_target(), b"waiting A"))
        .expect("send A");
    assert!(
        eventually(WAIT, || fx.remote().received() == 1),
        "A not taken"
    );
    fx.remote().set_fault(Fault::None);
    // Tokens come from a counter (8 bits here): run round trips until the next one is A's ^ 0x80.
    let target = a.token() ^ 0x80;
    let mut next = round_trip(&fx, b"step") + 1;
    while next & 0xff != target {
        next = round_trip(&fx, b"step") + 1;
    }
    let errors = t.stats().protocol_errors;
    fx.remote().set_fault(Fault::WrongToken);
    let b = t
        .send(&Request::new(fx.echo_target(), b"answered B"))
        .expect("send B");
    assert_eq!(b.token(), target, "tokens are not handed out in order");
    assert!(
        // The poll drains the reply ring first; then the refusal is counted, or A is done.
        eventually(WAIT, || {
            t.poll_done(&a) == Ok(true) || t.stats().protocol_errors > errors
        }),
        "the remote did not answer B"
    );
    assert_eq!(
        t.poll_done(&a),
        Ok(false),
        "B's record, with A's token, completed A"
    );
    assert_eq!(t.stats().protocol_errors, errors + 1);
    // The remote lets A go: A gets its own echo.
    fx.remote().set_fault(Fault::None);
    fx.remote().release();
    assert!(
        eventually(WAIT, || t.poll_done(&a) == Ok(true)),
        "A not released"
    );
    let mut out = [0u8; 64];
    let n = t.fetch_response(&a, &mut out).expect("fetch A");
    assert_eq!(&out[..n], &echo_of(b"waiting A")[..]);
    t.mark_txdone(a, TxOutcome::Done);
    // B's buffer went to the remote and its only record was refused: B times out.
    t.mark_txdone(b, TxOutcome::TimedOut);
    t.shutdown().expect("shutdown");
}
