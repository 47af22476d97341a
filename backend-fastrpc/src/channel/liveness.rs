//! Whether the DSP is up, and the rule that no call slips past a DSP-loss sweep.
//!
//! The guarantee ("after `remote_down`, no call stays in flight waiting for a DSP that is gone")
//! comes from the **per-context slot locks**, not from the ordering of the flag:
//!
//! - `down_and_sweep` stores `up = false`, *then* locks every slot ([`ContextTable::fail_inflight`]);
//! - a starter marks its context `inflight` under the slot lock, releases it, queues the message,
//!   *then* re-reads `up` ([`Liveness::recheck_after_queue`]).
//!
//! For one slot, either the sweep's lock comes after the starter's unlock (the sweep sees
//! `inflight` and fails the call), or it comes before the starter's lock: then the store of
//! `false` happens-before the re-check through that lock (unlock → lock), and read-write
//! coherence forbids the re-check from reading the older `true`, so the starter fails its own
//! call. Neither case uses the flag's ordering, so every access to it is Relaxed. Model-checked:
//! `loom_tests::loom_remote_down_races_start` (fails if the re-check is removed).
//!
//! Not covered: a `remote_up` between the sweep and a starter's re-check lets that starter's call
//! (queued while the DSP was gone) stay in flight; its caller's deadline ends it.

use crate::channel::context::{ContextTable, CtxState};
use crate::error::FastRpcError;
use fwipc_transport_api::sync::{AtomicBool, Ordering};

/// The DSP-up flag of one channel.
pub(crate) struct Liveness {
    up: AtomicBool,
}

impl Liveness {
    /// Up.
    pub(crate) fn new() -> Self {
        Liveness {
            up: AtomicBool::new(true),
        }
    }

    /// Whether new calls may start. An early refusal only; the re-check after queueing is what
    /// makes a racing sweep safe.
    pub(crate) fn is_up(&self) -> bool {
        // Relaxed: nothing is published with the flag; see the module docs.
        self.up.load(Ordering::Relaxed)
    }

    /// The DSP is back.
    pub(crate) fn set_up(&self) {
        // Relaxed: nothing is published with the flag (the link and the context table carry
        // their own synchronisation); see the module docs.
        self.up.store(true, Ordering::Relaxed);
    }

    /// The DSP is gone: clear the flag, then fail every in-flight call with `RemoteReset`.
    /// Returns how many were failed.
    pub(crate) fn down_and_sweep(&self, table: &ContextTable) -> usize {
        // Relaxed: the store is sequenced before the slot locks taken by the sweep; a starter
        // that takes a slot lock after the sweep released it is ordered after this store by
        // that lock (module docs), which is all the re-check needs.
        self.up.store(false, Ordering::Relaxed);
        table.fail_inflight(None, FastRpcError::RemoteReset)
    }

    /// A starter that marked slot `idx` in flight (under its lock) and queued the message:
    /// if a sweep ran in between and missed this context, fail it here. Returns whether it
    /// failed the call.
    pub(crate) fn recheck_after_queue(&self, table: &ContextTable, idx: usize) -> bool {
        // Relaxed: ordered after a sweep's store by the slot lock taken when `inflight` was set
        // (module docs); a stale `true` is impossible once that lock ordered us after the sweep.
        if self.up.load(Ordering::Relaxed) {
            return false;
        }
        let Some(slot) = table.slot(idx) else {
            return false;
        };
        let mut c = slot.lock();
        if c.inflight {
            c.inflight = false;
            c.state = CtxState::Failed(FastRpcError::RemoteReset);
            return true;
        }
        false
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// A DSP-loss sweep races a starter between its first `up` check and its re-check: the
    /// call never stays in flight with the DSP gone (it is failed by the sweep or by the
    /// starter's re-check), and is failed exactly once.
    #[test]
    fn loom_remote_down_races_start() {
        loom::model(|| {
            let t = Arc::new(ContextTable::new(1, 1).unwrap());
            let live = Arc::new(Liveness::new());
            let (t2, live2) = (t.clone(), live.clone());
            let starter = loom::thread::spawn(move || {
                if !live2.is_up() {
                    return None;
                }
                let (i, g) = t2.alloc(0).unwrap();
                {
                    // As `Session::build_and_send` does before queueing.
                    let mut c = t2.slot(i).unwrap().lock();
                    c.state = CtxState::InFlight;
                    c.inflight = true;
                }
                // (the message is queued here)
                let failed_here = live2.recheck_after_queue(&t2, i);
                Some((i, g, failed_here))
            });
            let swept = live.down_and_sweep(&t);
            let started = starter.join().unwrap();
            if let Some((i, g, failed_here)) = started {
                let c = t.slot(i).unwrap().lock();
                assert!(!c.inflight, "a call slipped past the sweep");
                assert_eq!(c.state, CtxState::Failed(FastRpcError::RemoteReset));
                drop(c);
                assert_eq!(usize::from(failed_here) + swept, 1, "failed exactly once");
                assert!(t.drop_owner(i, g, false));
            }
            assert!(!live.is_up());
        });
    }
}
