//! Invoke contexts: a bounded table (sized at channel setup, ids 1..=255 in bits 4..11 like
//! Linux), a generation in the upper id bits so stale, duplicated and unknown responses are told
//! apart (docs/protocols/fastrpc.md §12.4), and explicit two-owner lifetime (§12.5):
//!
//! - the *owner* (the caller) holds a context from `start` until `finish`/`abandon`;
//! - the *in-flight* reference is held from the moment the message is queued until the DSP
//!   answers, the DSP restarts, or the session is torn down.
//!
//! The context (its payload buffer and every shared-buffer map it references) is released when
//! both are gone. A timed-out or cancelled call therefore keeps its buffers until the DSP's
//! late answer. The receive path never releases: it marks the context for *reaping*, and the
//! release runs in the next ordinary (non-callback) entry (the 2019 "DMA free in IRQ" lesson).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::task::Waker;

use fwipc_transport_api::sync::{AtomicU64, AtomicUsize, Lock, Ordering};

use crate::error::{FastRpcError, Result};
use crate::mem::{DmaRegion, SharedBuf};
use crate::wire::layout::{BufDesc, HandleDesc, Olap};
use crate::wire::scalars::Scalars;
/// The wire context id lives with the wire layouts; re-exported here, where contexts are.
pub(crate) use crate::wire::CtxId;
use crate::wire::GEN_MASK;

/// Largest number of contexts: ids are 8 bits (1..=255; 0 is never issued).
pub(crate) const MAX_CONTEXTS: usize = 255;
/// Where a context is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtxState {
    /// On the free list.
    Free,
    /// Taken by a caller, message being built.
    Building,
    /// Message queued, no answer yet.
    InFlight,
    /// The DSP answered with `retval`.
    Done(i32),
    /// Finished without an answer (DSP restart, teardown).
    Failed(FastRpcError),
}

/// One out-buffer of a call: argument slot, inline offset (or `NOT_INLINE`), original length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct OutRec {
    /// Argument slot index.
    pub slot: u16,
    /// Inline payload offset, or [`crate::wire::layout::NOT_INLINE`] for a mapped buffer.
    pub off: u64,
    /// Length the caller asked for.
    pub len: u64,
}

/// A payload buffer lent from a session's pool, with its private shadow (see
/// [`PayloadLease::shadow`]); returns both on drop.
pub(crate) struct PayloadLease {
    pool: Arc<PayloadPool>,
    idx: u16,
    shadow: Box<[u8]>,
}

impl PayloadLease {
    /// The region (DSP-shared: accessed only through `crate::mem::{read_at, write_at}`).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn region(&self) -> &Arc<dyn DmaRegion> {
        &self.pool.regions[self.idx as usize]
    }
    /// The region and its shadow: AP-private memory as large as the region, allocated with the
    /// pool. The layout engine builds a call in the shadow and parsers read the DSP's metadata
    /// from a copy there, so no slice of the shared region ever exists (`crate::mem` docs).
    pub(crate) fn parts(&mut self) -> (&Arc<dyn DmaRegion>, &mut [u8]) {
        (&self.pool.regions[self.idx as usize], &mut self.shadow)
    }
}

impl Drop for PayloadLease {
    fn drop(&mut self) {
        // `Box<[u8]>::default()` is the empty slice: no allocation.
        let shadow = core::mem::take(&mut self.shadow);
        // Capacity reserved at setup; a lease exists once per index, so this never grows.
        self.pool.free.lock().push((self.idx, shadow));
    }
}

/// A session's payload buffers, allocated on its context bank at open, each with an AP-private
/// shadow of the same size (allocated here, at setup, never on the invoke path).
pub(crate) struct PayloadPool {
    regions: Box<[Arc<dyn DmaRegion>]>,
    free: Lock<Vec<(u16, Box<[u8]>)>>,
}

impl PayloadPool {
    /// A pool over `regions`.
    pub(crate) fn new(regions: Vec<Arc<dyn DmaRegion>>) -> Arc<Self> {
        let free: Vec<(u16, Box<[u8]>)> = regions
            .iter()
            .enumerate()
            .rev()
            .map(|(i, r)| (i as u16, alloc::vec![0u8; r.len()].into_boxed_slice()))
            .collect();
        Arc::new(PayloadPool {
            regions: regions.into_boxed_slice(),
            free: Lock::new(free),
        })
    }
    /// Take a buffer; `None` when all are lent.
    pub(crate) fn take(self: &Arc<Self>) -> Option<PayloadLease> {
        let (idx, shadow) = self.free.lock().pop()?;
        Some(PayloadLease {
            pool: self.clone(),
            idx,
            shadow,
        })
    }
    /// Buffers.
    pub(crate) fn capacity(&self) -> usize {
        self.regions.len()
    }
    /// Size of each buffer (the smallest, if they differ).
    pub(crate) fn region_len(&self) -> usize {
        self.regions.iter().map(|r| r.len()).min().unwrap_or(0)
    }
    /// Buffers free right now.
    pub(crate) fn free_count(&self) -> usize {
        self.free.lock().len()
    }
}

/// One context slot. All fields are guarded by the slot's lock.
pub(crate) struct Ctx {
    /// Life state.
    pub state: CtxState,
    /// Generation of the current (or last) call in this slot.
    pub generation: u64,
    /// PD bits sent.
    pub pd: u8,
    /// The caller still holds the context.
    pub owner: bool,
    /// The DSP holds the context (message sent, not answered).
    pub inflight: bool,
    /// Released by the receive path; finish the release in an ordinary context.
    pub reap: bool,
    /// Whether the caller abandoned it (timeout/cancel): the answer is a late reply.
    pub abandoned: bool,
    /// Session (table index) the call belongs to.
    pub session: u16,
    /// Scalars of the call.
    pub sc: Scalars,
    /// Remote handle of the call.
    pub handle: u32,
    /// Calling thread id (for resuming an interrupted call).
    pub tid: i32,
    /// The payload buffer.
    pub payload: Option<PayloadLease>,
    /// Shared buffers the call references (kept mapped until release).
    pub maps: Vec<SharedBuf>,
    /// Out-buffers.
    pub outs: Vec<OutRec>,
    /// Scratch for the layout engine (sized at setup: no allocation per call).
    pub olaps: Vec<Olap>,
    /// Scratch: buffer descriptors.
    pub bufs: Vec<BufDesc>,
    /// Scratch: handle descriptors.
    pub handles: Vec<HandleDesc>,
    /// Scratch: inline offsets.
    pub inline_off: Vec<u64>,
    /// Woken on completion.
    pub waker: Option<Waker>,
}

impl Ctx {
    fn new(max_args: usize) -> Self {
        Ctx {
            state: CtxState::Free,
            generation: 0,
            pd: 0,
            owner: false,
            inflight: false,
            reap: false,
            abandoned: false,
            session: 0,
            sc: Scalars(0),
            handle: 0,
            tid: 0,
            payload: None,
            maps: Vec::with_capacity(max_args),
            outs: Vec::with_capacity(max_args),
            olaps: Vec::with_capacity(max_args),
            bufs: Vec::with_capacity(max_args),
            handles: Vec::with_capacity(max_args),
            inline_off: Vec::with_capacity(max_args),
            waker: None,
        }
    }
}

/// The bounded table of contexts of one channel.
pub(crate) struct ContextTable {
    slots: Box<[Lock<Ctx>]>,
    free: Lock<Vec<u8>>,
    reap_pending: AtomicUsize,
    /// Channel-wide generation counter: every call gets a unique 52-bit generation, so a
    /// response naming another slot (or an old call of this slot) never matches by accident.
    next_gen: AtomicU64,
    max_args: usize,
}

/// What the receive path did with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxOutcome {
    /// Completed a waiting call.
    Completed,
    /// Completed a call whose caller had given up (late reply; context now reaped).
    Late,
    /// Second answer for a completed call.
    Duplicate,
    /// No such context / stale generation.
    Unknown,
    /// The PD bits did not match the request.
    BadPd,
}

impl ContextTable {
    /// `n` contexts (1..=255) of up to `max_args` arguments each.
    pub(crate) fn new(n: usize, max_args: usize) -> Result<Self> {
        if n == 0 || n > MAX_CONTEXTS {
            return Err(FastRpcError::InvalidArgument);
        }
        let slots: Vec<Lock<Ctx>> = (0..n).map(|_| Lock::new(Ctx::new(max_args))).collect();
        Ok(ContextTable {
            slots: slots.into_boxed_slice(),
            // Lowest ids first (popped from the end).
            free: Lock::new((0..n as u8).rev().collect()),
            reap_pending: AtomicUsize::new(0),
            next_gen: AtomicU64::new(0),
            max_args,
        })
    }

    /// Number of contexts.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Argument capacity per call.
    pub(crate) fn max_args(&self) -> usize {
        self.max_args
    }

    /// Contexts free right now.
    pub(crate) fn free_count(&self) -> usize {
        self.free.lock().len()
    }

    /// Take a free context for session `session`: returns (slot index, generation), the slot
    /// in state `Building` with the owner reference. `Busy` when the table is full.
    pub(crate) fn alloc(&self, session: u16) -> Result<(usize, u64)> {
        let idx = self.free.lock().pop().ok_or(FastRpcError::Busy)? as usize;
        let mut c = self.slots[idx].lock();
        debug_assert_eq!(c.state, CtxState::Free);
        c.state = CtxState::Building;
        // Relaxed: uniqueness only; the value is published under the slot lock.
        c.generation = self.next_gen.fetch_add(1, Ordering::Relaxed) & GEN_MASK;
        c.owner = true;
        c.inflight = false;
        c.reap = false;
        c.abandoned = false;
        c.session = session;
        Ok((idx, c.generation))
    }

    /// The slot `idx` (for the owner of a ticket; callers check the generation).
    pub(crate) fn slot(&self, idx: usize) -> Option<&Lock<Ctx>> {
        self.slots.get(idx)
    }

    /// Release a context whose owner and in-flight references are both gone: drop its maps
    /// and payload, bump the generation, put it back on the free list. Only from ordinary
    /// contexts (never the receive path).
    pub(crate) fn release_locked(&self, idx: usize, c: &mut Ctx) {
        debug_assert!(!c.owner && !c.inflight);
        c.maps.clear();
        c.payload = None;
        c.outs.clear();
        c.waker = None;
        c.state = CtxState::Free;
        if c.reap {
            c.reap = false;
            // Relaxed: a hint counter that only lets `reap` skip the scan; the slot state is
            // guarded by its lock.
            self.reap_pending.fetch_sub(1, Ordering::Relaxed);
        }
        self.free.lock().push(idx as u8);
    }

    /// Drop the owner reference (the caller is done or gave up); releases at once when the DSP
    /// does not hold the context. Returns whether it was released.
    pub(crate) fn drop_owner(&self, idx: usize, generation: u64, abandoned: bool) -> bool {
        let Some(slot) = self.slots.get(idx) else {
            return false;
        };
        let mut c = slot.lock();
        if c.generation != generation || !c.owner {
            return false;
        }
        c.owner = false;
        c.abandoned = abandoned;
        if !c.inflight {
            self.release_locked(idx, &mut c);
            return true;
        }
        false
    }

    /// The receive path: complete context `id` with `retval`. Never releases memory; `count`
    /// runs before the completion becomes visible to the waiter (so a caller that sees its call
    /// done also sees it counted); the waiter is woken after the lock is dropped.
    pub(crate) fn complete(
        &self,
        id: CtxId,
        retval: i32,
        count: impl FnOnce(RxOutcome),
    ) -> RxOutcome {
        let sid = id.slot_id() as usize;
        let Some(slot) = sid.checked_sub(1).and_then(|i| self.slots.get(i)) else {
            count(RxOutcome::Unknown);
            return RxOutcome::Unknown;
        };
        let mut c = slot.lock();
        let outcome = if c.generation != id.generation() {
            RxOutcome::Unknown
        } else {
            match c.state {
                CtxState::InFlight if c.inflight && c.pd != id.pd() => RxOutcome::BadPd,
                CtxState::InFlight if c.inflight => {
                    c.state = CtxState::Done(retval);
                    c.inflight = false;
                    if c.owner {
                        RxOutcome::Completed
                    } else {
                        self.mark_reap(&mut c);
                        RxOutcome::Late
                    }
                }
                CtxState::Done(_) | CtxState::Failed(_) => RxOutcome::Duplicate,
                CtxState::Free | CtxState::Building | CtxState::InFlight => RxOutcome::Unknown,
            }
        };
        count(outcome);
        let w = if matches!(outcome, RxOutcome::Completed | RxOutcome::Late) {
            c.waker.take()
        } else {
            None
        };
        drop(c);
        if let Some(w) = w {
            w.wake();
        }
        outcome
    }

    fn mark_reap(&self, c: &mut Ctx) {
        if !c.reap {
            c.reap = true;
            // Relaxed: see `release_locked`.
            self.reap_pending.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resume an abandoned call of `session` with the same thread, handle and scalars
    /// (docs/protocols/fastrpc.md §12.6: a retry after a signal must not re-send, which would run
    /// the method twice and can hang a DSP thread). The caller becomes its owner again; returns
    /// (slot, generation).
    pub(crate) fn resume(
        &self,
        session: u16,
        tid: i32,
        handle: u32,
        sc: Scalars,
    ) -> Option<(usize, u64)> {
        for (idx, slot) in self.slots.iter().enumerate() {
            let mut c = slot.lock();
            let waiting = c.inflight || c.reap;
            if c.owner
                || !c.abandoned
                || !waiting
                || c.session != session
                || c.tid != tid
                || c.handle != handle
                || c.sc != sc
            {
                continue;
            }
            c.owner = true;
            c.abandoned = false;
            if c.reap {
                c.reap = false;
                // Relaxed: see `release_locked`.
                self.reap_pending.fetch_sub(1, Ordering::Relaxed);
            }
            return Some((idx, c.generation));
        }
        None
    }

    /// Fail every in-flight context (of `session`, or all with `None`) with `err`: the DSP
    /// will not answer (restart) or may no longer touch the memory (teardown). Contexts whose
    /// owner is gone are marked for reaping. Returns how many were failed.
    pub(crate) fn fail_inflight(&self, session: Option<u16>, err: FastRpcError) -> usize {
        let mut n = 0;
        for slot in self.slots.iter() {
            let mut c = slot.lock();
            if !c.inflight || session.is_some_and(|s| s != c.session) {
                continue;
            }
            c.inflight = false;
            c.state = CtxState::Failed(err);
            if !c.owner {
                self.mark_reap(&mut c);
            }
            n += 1;
            let w = c.waker.take();
            drop(c);
            if let Some(w) = w {
                w.wake();
            }
        }
        n
    }

    /// Session teardown: release every context of `session` (failing in-flight ones first).
    /// Tickets the caller still holds become stale (their generation no longer matches).
    pub(crate) fn release_session(&self, session: u16) -> usize {
        self.fail_inflight(Some(session), FastRpcError::ChannelDown);
        let mut n = 0;
        for (idx, slot) in self.slots.iter().enumerate() {
            let mut c = slot.lock();
            if c.session == session && c.state != CtxState::Free && c.state != CtxState::Building {
                c.owner = false;
                c.inflight = false;
                self.release_locked(idx, &mut c);
                n += 1;
            }
        }
        n
    }

    /// Finish releases the receive path deferred. Cheap when none are pending.
    pub(crate) fn reap(&self) -> usize {
        // Relaxed: a hint; a reap missed here is found by the next call.
        if self.reap_pending.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut n = 0;
        for (idx, slot) in self.slots.iter().enumerate() {
            let mut c = slot.lock();
            if c.reap && !c.owner && !c.inflight {
                self.release_locked(idx, &mut c);
                n += 1;
            }
        }
        n
    }

    /// Contexts held only because the DSP may still use them (caller gone, no answer yet).
    pub(crate) fn zombies(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                let c = s.lock();
                c.inflight && !c.owner
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_layout() {
        let id = CtxId::new(1, 0, 1);
        assert_eq!(id.0, 0x11);
        let id = CtxId::new(255, 0xABC, 2);
        assert_eq!(id.0 & 0xFF0, 0xFF0);
        assert_eq!((id.slot_id(), id.generation(), id.pd()), (255, 0xABC, 2));
    }

    #[test]
    fn late_reply_releases_only_via_reap_and_duplicates_never_twice() {
        let t = ContextTable::new(2, 4).unwrap();
        let (i, g) = t.alloc(0).unwrap();
        {
            let mut c = t.slot(i).unwrap().lock();
            c.state = CtxState::InFlight;
            c.inflight = true;
        }
        assert!(!t.drop_owner(i, g, true), "DSP still holds it");
        assert_eq!(t.free_count(), 1);
        assert_eq!(t.zombies(), 1);
        let id = CtxId::new(i as u8 + 1, g, 0);
        assert_eq!(
            t.complete(CtxId::new(i as u8 + 1, g + 1, 0), 0, |_| {}),
            RxOutcome::Unknown
        );
        assert_eq!(t.complete(id, 0, |_| {}), RxOutcome::Late);
        assert_eq!(t.free_count(), 1, "receive path never frees");
        assert_eq!(t.complete(id, 0, |_| {}), RxOutcome::Duplicate);
        assert_eq!(t.reap(), 1);
        assert_eq!(t.free_count(), 2);
        assert_eq!(
            t.complete(id, 0, |_| {}),
            RxOutcome::Unknown,
            "stale generation"
        );
        assert_eq!(t.reap(), 0);
    }

    #[test]
    fn table_is_bounded() {
        assert!(ContextTable::new(256, 1).is_err());
        assert!(ContextTable::new(0, 1).is_err());
        let t = ContextTable::new(1, 1).unwrap();
        let _ = t.alloc(0).unwrap();
        assert_eq!(t.alloc(0).err(), Some(FastRpcError::Busy));
        assert_eq!(
            t.complete(CtxId(0), 0, |_| {}),
            RxOutcome::Unknown,
            "id 0 is never issued"
        );
        assert_eq!(
            t.complete(CtxId(0x20), 0, |_| {}),
            RxOutcome::Unknown,
            "beyond the table"
        );
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn in_flight(t: &ContextTable) -> (usize, u64) {
        let (i, g) = t.alloc(0).unwrap();
        let mut c = t.slot(i).unwrap().lock();
        c.state = CtxState::InFlight;
        c.inflight = true;
        (i, g)
    }

    /// The caller gives up while the late reply arrives: whichever wins, the context is
    /// released exactly once, and never by the receive path itself.
    #[test]
    fn loom_late_reply_races_abandon() {
        loom::model(|| {
            let t = Arc::new(ContextTable::new(1, 1).unwrap());
            let (i, g) = in_flight(&t);
            let t2 = t.clone();
            let rx = loom::thread::spawn(move || {
                let o = t2.complete(CtxId::new(1, g, 0), 0, |_| {});
                assert!(matches!(o, RxOutcome::Completed | RxOutcome::Late));
                // The receive path never frees.
                o
            });
            let _ = t.drop_owner(i, g, true);
            let o = rx.join().unwrap();
            t.reap();
            assert_eq!(t.free_count(), 1, "{o:?}");
            assert_eq!(t.zombies(), 0);
        });
    }

    /// A DSP restart sweep races the answer: the call ends exactly once (answered or failed),
    /// the owner sees a terminal state, and finishing releases it once.
    #[test]
    fn loom_reset_races_reply() {
        loom::model(|| {
            let t = Arc::new(ContextTable::new(1, 1).unwrap());
            let (i, g) = in_flight(&t);
            let t2 = t.clone();
            let rx = loom::thread::spawn(move || t2.complete(CtxId::new(1, g, 0), 7, |_| {}));
            let failed = t.fail_inflight(None, FastRpcError::RemoteReset);
            let o = rx.join().unwrap();
            assert_eq!(
                failed == 1,
                o != RxOutcome::Completed,
                "exactly one ends the call"
            );
            let st = t.slot(i).unwrap().lock().state;
            assert!(matches!(
                st,
                CtxState::Done(7) | CtxState::Failed(FastRpcError::RemoteReset)
            ));
            assert!(t.drop_owner(i, g, false));
            assert_eq!(t.free_count(), 1);
        });
    }
}
