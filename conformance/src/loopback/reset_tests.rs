//! A remote reset gives the channel back: the buffers a remote took under `Drop` return to the
//! pool, the transfers it held fail with a typed error at once, and later calls succeed.

use std::time::Duration;

use fwipc_transport_api::fixture::{echo_reply, Fault, Fixture};
use fwipc_transport_api::{Error, Request, Transport, TxOutcome};

use crate::util::eventually;

use super::{LoopbackFixture, MAX_MSG};

/// How long the remote thread gets to act.
const WAIT: Duration = Duration::from_secs(5);

/// Under `Drop` the remote keeps every buffer it was sent, until the pool is empty (`Busy`);
/// `reset_remote` must give them all back: each held transfer ends with `Cancelled`, the pool is
/// full again and an echo goes through. (Before, the reset only forgot the requests: the
/// transfers stayed in flight until their callers gave up, then abandoned with their buffers
/// lent forever, and every later send was `Busy` until shutdown.)
#[test]
fn remote_reset_returns_the_buffers_a_dropping_remote_took() {
    for mode in LoopbackFixture::modes() {
        let fx = LoopbackFixture::setup(*mode);
        let t = fx.transport();
        fx.remote().set_fault(Fault::Drop);
        let mut tickets = Vec::new();
        loop {
            match t.send(&Request::new(fx.echo_target(), b"held")) {
                Ok(tk) => tickets.push(tk),
                Err(Error::Busy) => break,
                Err(e) => panic!("{mode:?}: send: {e}"),
            }
        }
        assert_eq!(tickets.len(), MAX_MSG, "{mode:?}");
        assert!(
            eventually(WAIT, || fx.remote().received() == MAX_MSG as u64),
            "{mode:?}: the remote did not take every request"
        );
        // One caller gives up first: its transfer is abandoned, its buffer still lent.
        let first = tickets.remove(0);
        t.mark_txdone(first, TxOutcome::TimedOut);
        fx.remote().reset_remote();
        for tk in tickets {
            assert_eq!(t.poll_done(&tk), Ok(true), "{mode:?}: still in flight");
            assert_eq!(
                t.fetch_response(&tk, &mut [0u8; 16]),
                Err(Error::Cancelled),
                "{mode:?}"
            );
            t.mark_txdone(tk, TxOutcome::Cancelled);
        }
        let st = t.stats();
        assert_eq!(st.pool_free, st.pool_capacity, "{mode:?}: buffers not back");
        let tk = t
            .send(&Request::new(fx.echo_target(), b"after"))
            .unwrap_or_else(|e| panic!("{mode:?}: send after the reset: {e}"));
        assert!(
            eventually(WAIT, || t.poll_done(&tk) == Ok(true)),
            "{mode:?}"
        );
        let mut out = [0u8; 16];
        let n = t
            .fetch_response(&tk, &mut out)
            .expect("echo after the reset");
        let mut want = [0u8; 5];
        echo_reply(b"after", &mut want);
        assert_eq!(&out[..n], &want, "{mode:?}");
        t.mark_txdone(tk, TxOutcome::Done);
        t.shutdown().expect("shutdown");
    }
}
