//! Teardown with transfers in flight.

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{Fault, Fixture};
use fwipc_transport_api::{Error, Transport};

use super::Verdict;
use crate::util::{assert_pool_full, echo, echo_ok, eventually, expected, request};

/// Threads wait on held transfers; shutdown wakes every one of them with `Shutdown` (none lost),
/// finishes within its bound, refuses new sends, still delivers a reply that had arrived before it,
/// leaves every buffer back in the pool, is idempotent; and a new instance works afterwards.
pub fn teardown_in_flight<F: Fixture>() -> Verdict {
    for &mode in F::modes() {
        let fx = F::setup(mode);
        let t = fx.transport();
        // One transfer whose reply has arrived but was not fetched yet: shutdown must not lose it.
        let done_payload = [0x42u8, 1, 2, 3, 4, 5, 6, 7];
        let done = t
            .send(&request(&fx, &done_payload))
            .unwrap_or_else(|e| panic!("{}: send: {e}", F::NAME));
        let arrived = eventually(fx.reply_timeout(), || t.poll_done(&done).unwrap_or(false));
        assert!(arrived, "{}: reply never arrived", F::NAME);
        fx.remote().set_fault(Fault::Hold);
        let waiters = 4u32.min(t.max_msg() as u32 - 1);
        let long = fx.reply_timeout() * 4;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..waiters)
                .map(|i| {
                    let fx = &fx;
                    // Back-pressure (`Retry`/`Busy`) is legitimate while earlier messages are
                    // still being recycled by the remote: retry the send, bounded.
                    s.spawn(move || {
                        let start = Instant::now();
                        loop {
                            match echo(fx, &i.to_le_bytes(), long) {
                                Err(Error::Retry | Error::Busy) if start.elapsed() < long => {
                                    std::thread::sleep(Duration::from_millis(1))
                                }
                                r => return r,
                            }
                        }
                    })
                })
                .collect();
            let all_in = eventually(fx.reply_timeout(), || {
                fx.remote().received() >= waiters as u64
            });
            assert!(all_in, "{}: requests never reached the remote", F::NAME);
            let start = Instant::now();
            t.shutdown().unwrap_or_else(|e| {
                panic!("{}: shutdown with transfers in flight failed: {e}", F::NAME)
            });
            let took = start.elapsed();
            assert!(
                took < fx.reply_timeout() + Duration::from_secs(1),
                "{}: shutdown took {took:?}",
                F::NAME
            );
            for h in hs {
                let r = h.join().expect("waiter panicked");
                assert_eq!(
                    r,
                    Err(Error::Shutdown),
                    "{}: waiter not woken with Shutdown ({mode:?})",
                    F::NAME
                );
            }
        });
        assert_eq!(
            t.poll_done(&done),
            Ok(true),
            "{}: a completed transfer was lost by shutdown",
            F::NAME
        );
        let mut out = vec![0u8; t.max_msg_size()];
        let n = t
            .fetch_response(&done, &mut out)
            .unwrap_or_else(|e| panic!("{}: completed reply lost: {e}", F::NAME));
        assert_eq!(
            &out[..n],
            &expected(&done_payload)[..],
            "{}: completed reply corrupted by shutdown",
            F::NAME
        );
        t.mark_txdone(done, fwipc_transport_api::TxOutcome::Done);
        assert_eq!(
            t.shutdown(),
            Ok(()),
            "{}: second shutdown not idempotent",
            F::NAME
        );
        let p = [1u8, 2, 3, 4];
        assert_eq!(
            t.send(&request(&fx, &p)).err(),
            Some(Error::Shutdown),
            "{}: send after shutdown",
            F::NAME
        );
        assert_pool_full(&fx, "after teardown");
        drop(fx);
        let again = F::setup(mode);
        echo_ok(&again, b"new instance");
    }
    Verdict::Pass
}
