//! Whether the DSP is up, and the rule that no call slips past a DSP-loss sweep.
//!
//! The guarantee ("after `remote_down`, no call stays in flight waiting for a DSP that is gone")
//! comes from the **per-context slot locks**, not from the ordering of the flag:
//!
//! - `down_and_sweep` stores `up = false`, *then* locks every slot ([`ContextTable::fail_inflight`]);
//! - a starter marks its context in flight (the table's loan to the DSP) under the slot lock
//!   ([`ContextTable::send`]), releases it, queues the message, *then* re-reads `up`
//!   ([`Liveness::recheck_after_queue`]).
//!
//! For one slot, either the sweep's lock comes after the starter's unlock (the sweep sees the
//! context in flight and fails the call), or it comes before the starter's lock: then the store of
//! `false` happens-before the re-check through that lock (unlock → lock), and read-write
//! coherence forbids the re-check from reading the older `true`, so the starter fails its own
//! call. Neither case uses the flag's ordering, so every access to it is Relaxed. Model-checked:
//! `loom_tests::loom_remote_down_races_start` (fails if the re-check is removed).
//!
//! Not covered: a `remote_up` between the sweep and a starter's re-check lets that starter's call
//! (queued while the DSP was gone) stay in flight; its caller's deadline ends it.

use crate::channel::context::{ContextTable, InvokeTicket};
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

    /// A starter that marked context `t` in flight (under its lock) and queued the message:
    /// if a sweep ran in between and missed this context, fail it here. Returns whether it
    /// failed the call.
    pub(crate) fn recheck_after_queue(&self, table: &ContextTable, t: &InvokeTicket) -> bool {
        // Relaxed: ordered after a sweep's store by the slot lock taken when `inflight` was set
        // (module docs); a stale `true` is impossible once that lock ordered us after the sweep.
        if self.up.load(Ordering::Relaxed) {
            return false;
        }
        table.fail_sent(t, FastRpcError::RemoteReset)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::channel::context::CtxState;
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
                let it = t2.alloc(0).unwrap();
                // As `Session::build_and_send` does before queueing.
                t2.send(&it, |_| Ok(())).unwrap();
                // (the message is queued here)
                let failed_here = live2.recheck_after_queue(&t2, &it);
                Some((it, failed_here))
            });
            let swept = live.down_and_sweep(&t);
            let started = starter.join().unwrap();
            if let Some((it, failed_here)) = started {
                assert_eq!(t.zombies(), 0);
                assert_eq!(
                    t.with(&it, |s, _| Ok(s)),
                    Ok(CtxState::Failed(FastRpcError::RemoteReset)),
                    "a call slipped past the sweep"
                );
                assert_eq!(usize::from(failed_here) + swept, 1, "failed exactly once");
                t.drop_owner(&it, false);
                assert_eq!(t.free_count(), 1, "released");
            }
            assert!(!live.is_up());
        });
    }
}
