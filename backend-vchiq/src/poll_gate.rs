//! The single-poller gate of [`crate::Vchiq::poll`]: one thread runs the receive path at a time;
//! a thread that finds it busy leaves a "go round again" request. Local (ARM-only) memory, so
//! read-modify-writes are fine here (unlike on the shared region).
//!
//! The request must never be stranded: a loser that sets `again` just after the holder's last
//! check would otherwise leave the work until the next doorbell (or a `prepare_sleep` that an
//! interrupt-driven embedder may never call). So the holder re-checks `again` *after* opening
//! the gate, and the loser re-tries the gate *after* setting `again`: a Dekker pair (SeqCst
//! fences on both sides) in which either the holder sees the request or the loser gets the gate.
//! Model-checked in `loom_tests` (fails with the holder's re-check removed).

use crate::sync::{fence, AtomicBool, Ordering};

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct PollGate {
    busy: AtomicBool,
    again: AtomicBool,
}

impl PollGate {
    pub(crate) fn new() -> Self {
        PollGate {
            busy: AtomicBool::new(false),
            again: AtomicBool::new(false),
        }
    }

    /// Ask for a poll round (whoever polls next, or the running poller, does it).
    pub(crate) fn request(&self) {
        // Release: what the requester did before (e.g. `kick`'s local signal) is visible to the
        // poller whose `take_request` (AcqRel) reads it.
        self.again.store(true, Ordering::Release);
    }

    /// Whether a round was requested and not yet started (the worker must not sleep).
    pub(crate) fn requested(&self) -> bool {
        // Acquire: pairs with `request`.
        self.again.load(Ordering::Acquire)
    }

    /// Consume the request at the start of a round (gate held).
    pub(crate) fn take_request(&self) -> bool {
        // AcqRel swap: consume exactly once; Acquire pairs with the requester's Release.
        self.again.swap(false, Ordering::AcqRel)
    }

    fn try_close(&self) -> bool {
        // Acquire on success: the previous holder's work (Release in `open`) happens-before
        // ours. Relaxed on failure: we learn nothing from a busy gate.
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Become the poller. `false`: another thread holds the gate and will run a round for us
    /// (our request is recorded and the holder is guaranteed to see it).
    pub(crate) fn enter(&self) -> bool {
        if self.try_close() {
            return true;
        }
        self.request();
        // SeqCst fence (loser half of the Dekker pair with `leave`): StoreLoad between our
        // `again = true` and re-reading `busy`. Either the holder's re-check after its fence sees
        // `again`, or our retry below sees the gate open and we poll ourselves.
        fence(Ordering::SeqCst);
        self.try_close()
    }

    /// Stop being the poller. Returns `true` if a request arrived that the last round may have
    /// missed: the caller then tries [`PollGate::enter`] again.
    pub(crate) fn leave(&self) -> bool {
        // Release: our round's effects happen-before the next holder's Acquire in `try_close`.
        self.busy.store(false, Ordering::Release);
        // SeqCst fence (holder half of the Dekker pair with `enter`): StoreLoad between opening
        // the gate and re-reading `again`.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence; we act on it only through `enter`/`take_request`.
        self.again.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The interleaving of review point 4: the holder has made its last check and found nothing;
    /// a second poller arrives, loses the gate and returns. The holder's `leave` must report the
    /// request, and the holder (entering again) consumes it.
    #[test]
    fn loser_request_is_seen_after_the_last_round() {
        let g = PollGate::new();
        assert!(g.enter());
        assert!(!g.take_request(), "holder's last round: nothing requested");
        assert!(!g.enter(), "second poller loses the gate");
        assert!(g.requested());
        assert!(g.leave(), "the holder must see the stranded request");
        assert!(g.enter());
        assert!(g.take_request());
        assert!(!g.leave(), "consumed");
        assert!(!g.requested());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    /// The poll loop of `Vchiq::poll` reduced to the gate: a round takes the request, then
    /// consumes the work if it is there; it ends when it found neither.
    fn poll(g: &PollGate, work: &AtomicU32, done: &AtomicU32) {
        while g.enter() {
            loop {
                let again = g.take_request();
                // Acquire: pairs with the producer's Release (the "peer's tx_pos").
                let found = work.load(Ordering::Acquire) == 1;
                if found {
                    work.store(0, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                if !found && !again {
                    break;
                }
            }
            if !g.leave() {
                break;
            }
        }
    }

    /// A poller racing a producer that publishes work and then polls: after both return, the
    /// work was done (nobody left it for a doorbell that never comes).
    #[test]
    fn loom_poll_gate_no_stranded_request() {
        loom::model(|| {
            let sh = Arc::new((PollGate::new(), AtomicU32::new(0), AtomicU32::new(0)));
            let s2 = sh.clone();
            let producer = loom::thread::spawn(move || {
                s2.1.store(1, Ordering::Release);
                poll(&s2.0, &s2.1, &s2.2);
            });
            poll(&sh.0, &sh.1, &sh.2);
            producer.join().unwrap();
            assert_eq!(
                sh.2.load(Ordering::Relaxed),
                1,
                "work left until the next doorbell"
            );
        });
    }
}
