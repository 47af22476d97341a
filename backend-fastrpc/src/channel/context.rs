//! Invoke contexts, on the shared [`TransferTable`] (one with generations, see
//! `TransferTable::with_generations`): a bounded table (sized at channel setup, ids 1..=255 in
//! bits 4..11 like Linux), a channel-wide generation in the upper id bits so stale, duplicated
//! and unknown responses are told apart (docs/protocols/fastrpc.md §12.4), and explicit two-owner
//! lifetime (§12.5):
//!
//! - the *owner* (the caller) holds a context from `start` until `finish`/`abandon`;
//! - the *in-flight* reference (the table's loan to the remote) is held from the moment the
//!   message is queued until the DSP answers, the DSP restarts, or the session is torn down.
//!
//! The context (its payload buffer and every shared-buffer map it references) is released when
//! both are gone. A timed-out or cancelled call therefore keeps its buffers until the DSP's
//! late answer. The receive path never releases: the table marks the context for *reaping*, and
//! the release runs in the next ordinary (non-callback) entry (the 2019 "DMA free in IRQ"
//! lesson).
//!
//! What stays here, FastRPC's own: the context's part [`Ctx`] (payload lease and shadow, the
//! maps, the out-buffer records and the layout scratch, the call's session, thread, handle,
//! scalars and PD bits, the DSP's return value), the wire id ([`CtxId`]: slot id is the entry
//! index plus one, PD bits checked against the request), the resume match (§12.6) and the
//! session filter of the sweeps.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::task::Waker;

use fwipc_transport_api::sync::Lock;
use fwipc_transport_api::{
    Counters, EntryPart, Generations, ReplyOutcome, Shared, Stats, Ticket, TransferState,
    TransferTable, TxOutcome,
};

use crate::error::{FastRpcError, Result};
use crate::mem::{DmaRegion, SharedBuf};
use crate::wire::layout::{BufDesc, HandleDesc, Olap};
use crate::wire::layout_cache::LayoutCache;
use crate::wire::scalars::Scalars;
/// The wire context id lives with the wire layouts; re-exported here, where contexts are.
pub(crate) use crate::wire::CtxId;
use crate::wire::GEN_MASK;

/// Largest number of contexts: ids are 8 bits (1..=255; 0 is never issued).
pub(crate) const MAX_CONTEXTS: usize = 255;
/// A call in flight. Not `Clone`: finished exactly once. Dropping it without
/// [`Session::finish`](crate::Session::finish), [`Session::abandon`](crate::Session::abandon) or
/// [`Session::end`](crate::Session::end) keeps its context and payload
/// buffer until the session is torn down.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "end the call with Session::finish, abandon or end, or its context stays taken"]
pub struct InvokeTicket {
    pub(crate) idx: usize,
    pub(crate) generation: u64,
}

impl InvokeTicket {
    /// Context slot index.
    pub fn slot(&self) -> usize {
        self.idx
    }
    /// Context generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The context table's ticket: the generation's upper 32 bits as the token, the lower 32
    /// as the generation (`TransferTable::with_generations`).
    pub(crate) fn to_ticket(&self) -> Ticket {
        Ticket::new(
            (self.generation >> 32) as u32,
            self.idx as u32,
            self.generation as u32,
        )
    }

    /// The call a context table ticket names.
    pub(crate) fn from_ticket(t: &Ticket) -> Self {
        InvokeTicket {
            idx: t.slot() as usize,
            generation: (u64::from(t.token()) << 32) | u64::from(t.generation()),
        }
    }
}

/// Where a call its owner holds is (free, reserved and abandoned contexts are the table's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtxState {
    /// Message being built, or queued with no answer yet.
    InFlight,
    /// The DSP answered with `retval`.
    Done(i32),
    /// Finished without an answer (DSP restart, teardown, the link refusing the message).
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

/// A payload buffer's private image: AP-private memory as large as the region, and the layout
/// it holds ([`LayoutCache`]). Boxed, so a lease moves a pointer, not the cache.
pub(crate) struct Shadow {
    /// The image. Written by the layout engine (through `layout`) and, in its fd list only, by
    /// `Session::finish` (which reads the DSP's list into it): the kept layout relies on nothing
    /// else writing it.
    pub bytes: Box<[u8]>,
    /// The layout in `bytes`.
    pub layout: LayoutCache,
    /// The region's metadata is `bytes`' but for what the DSP may write there (out-buffer
    /// lengths, the fd list, the CRC list), and the fd list is the one read back into `bytes`.
    /// Set by `Session::finish` once it has read the fd list of a finished call; cleared by
    /// every new call's `Session::build` (the DSP writes the region again). A call whose
    /// layout is kept while this is set rewrites only those words
    /// (docs/protocols/fastrpc.md §12.9, "What a repeated call rewrites").
    pub region_current: bool,
}

/// A payload buffer lent from a session's pool, with its private shadow (see
/// [`PayloadLease::parts`]); returns both on drop.
pub(crate) struct PayloadLease {
    pool: Arc<PayloadPool>,
    idx: u16,
    /// `Some` until the lease is dropped (the drop gives it back to the pool).
    shadow: Option<Box<Shadow>>,
}

impl PayloadLease {
    /// The region (DSP-shared: accessed only through `crate::mem::{read_at, write_at}`).
    pub(crate) fn region(&self) -> &Arc<dyn DmaRegion> {
        &self.pool.regions[self.idx as usize]
    }
    /// The region and its shadow: AP-private memory as large as the region, allocated with the
    /// pool. The layout engine builds a call in the shadow and parsers read the DSP's metadata
    /// from a copy there, so no slice of the shared region ever exists (`crate::mem` docs).
    /// `None` only while the lease is being dropped.
    pub(crate) fn parts(&mut self) -> Option<(&Arc<dyn DmaRegion>, &mut Shadow)> {
        let shadow = self.shadow.as_deref_mut()?;
        Some((&self.pool.regions[self.idx as usize], shadow))
    }
}

impl Drop for PayloadLease {
    fn drop(&mut self) {
        if let Some(shadow) = self.shadow.take() {
            // Capacity reserved at setup; a lease exists once per index, so this never grows.
            self.pool.free.lock().push((self.idx, shadow));
        }
    }
}

/// A session's payload buffers, allocated on its context bank at open, each with an AP-private
/// shadow of the same size (allocated here, at setup, never on the invoke path).
pub(crate) struct PayloadPool {
    regions: Box<[Arc<dyn DmaRegion>]>,
    free: Lock<Vec<(u16, Box<Shadow>)>>,
}

impl PayloadPool {
    /// A pool over `regions`, for calls of up to `max_args` arguments.
    pub(crate) fn new(regions: Vec<Arc<dyn DmaRegion>>, max_args: usize) -> Arc<Self> {
        let free: Vec<(u16, Box<Shadow>)> = regions
            .iter()
            .enumerate()
            .rev()
            .map(|(i, r)| {
                let shadow = Box::new(Shadow {
                    bytes: alloc::vec![0u8; r.len()].into_boxed_slice(),
                    layout: LayoutCache::with_capacity(max_args),
                    region_current: false,
                });
                (i as u16, shadow)
            })
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
            shadow: Some(shadow),
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

/// FastRPC's part of a context (the table's entry holds the rest). Reset in place when the
/// context is released, so the scratch keeps its capacity.
pub(crate) struct Ctx {
    /// PD bits sent.
    pub pd: u8,
    /// Whether the caller abandoned it (timeout/cancel), so a retry may resume it.
    pub resumable: bool,
    /// Session (table index) the call belongs to.
    pub session: u16,
    /// Scalars of the call.
    pub sc: Scalars,
    /// Remote handle of the call.
    pub handle: u32,
    /// Calling thread id (for resuming an interrupted call).
    pub tid: i32,
    /// The DSP's return value, once it answered.
    pub retval: i32,
    /// Why the call failed, once the table failed it.
    pub failure: FastRpcError,
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
}

impl Ctx {
    fn new(max_args: usize) -> Self {
        Ctx {
            pd: 0,
            resumable: false,
            session: 0,
            sc: Scalars(0),
            handle: 0,
            tid: 0,
            retval: 0,
            failure: FastRpcError::ChannelDown,
            payload: None,
            maps: Vec::with_capacity(max_args),
            outs: Vec::with_capacity(max_args),
            olaps: Vec::with_capacity(max_args),
            bufs: Vec::with_capacity(max_args),
            handles: Vec::with_capacity(max_args),
            inline_off: Vec::with_capacity(max_args),
        }
    }
}

impl EntryPart<Generations> for Ctx {
    /// The release: drop the maps and the payload (the table calls this when it frees the
    /// context, never on the receive path).
    fn reset(&mut self) {
        self.maps.clear();
        self.payload = None;
        self.outs.clear();
        self.resumable = false;
    }
}

/// The bounded table of contexts of one channel.
pub(crate) struct ContextTable {
    table: TransferTable<Ctx, Shared, Generations>,
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
        let table = TransferTable::with_generations(n, GEN_MASK, || Ctx::new(max_args))
            .map_err(|_| FastRpcError::InvalidArgument)?;
        Ok(ContextTable { table, max_args })
    }

    /// Argument capacity per call.
    pub(crate) fn max_args(&self) -> usize {
        self.max_args
    }

    /// Contexts free right now.
    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        self.table.free_count()
    }

    /// The channel's counters.
    pub(crate) fn counters(&self) -> &Counters {
        self.table.counters()
    }

    /// The counters, with the contexts as the pool.
    pub(crate) fn stats(&self) -> Stats {
        self.table.stats()
    }

    /// The counters, with a session's payload buffers as the pool.
    pub(crate) fn stats_with_pool(&self, capacity: usize, free: usize) -> Stats {
        self.table.stats_with_pool(capacity, free)
    }

    /// Take a free context for session `session`, reserved (not sent) with the owner
    /// reference. `Busy` (counted) when the table is full.
    pub(crate) fn alloc(&self, session: u16) -> Result<InvokeTicket> {
        self.table
            .reserve(|c| {
                c.session = session;
                Ok(())
            })
            .map(|s| InvokeTicket::from_ticket(&s.ticket()))
            .map_err(|_| FastRpcError::Busy)
    }

    /// Run `f` on the context `t` while its owner holds it; `InvalidArgument` for a stale
    /// ticket or one its owner gave up.
    pub(crate) fn with<R>(
        &self,
        t: &InvokeTicket,
        f: impl FnOnce(CtxState, &mut Ctx) -> Result<R>,
    ) -> Result<R> {
        self.table
            .inspect(&t.to_ticket(), |state, _, c| f(ctx_state(state, c), c))
            .map_err(|_| FastRpcError::InvalidArgument)?
    }

    /// Build the message of the reserved context `t` with `f`; on `Ok` the context is in flight
    /// (the DSP's reference taken before the message can reach it). Send after this returns.
    pub(crate) fn send<R>(
        &self,
        t: &InvokeTicket,
        f: impl FnOnce(&mut Ctx) -> Result<R>,
    ) -> Result<R> {
        self.table
            .send_with(&t.to_ticket(), f)
            .map_err(|_| FastRpcError::InvalidArgument)?
    }

    /// The message of `t` did not reach the DSP (or may not have): if still in flight, it fails
    /// with `err`. Returns whether it failed the call.
    pub(crate) fn fail_sent(&self, t: &InvokeTicket, err: FastRpcError) -> bool {
        self.table
            .fail_sent(&t.to_ticket(), err.into(), |c| c.failure = err)
    }

    /// Ask for `w` to be woken when the call finishes.
    pub(crate) fn register_waker(&self, t: &InvokeTicket, w: &Waker) -> Result<()> {
        if self.table.register_waker(&t.to_ticket(), w) {
            Ok(())
        } else {
            Err(FastRpcError::InvalidArgument)
        }
    }

    /// Drop the owner reference (the caller is done, or gave up: `abandoned`, which lets a
    /// retry resume it); releases at once when the DSP does not hold the context.
    /// [`ContextTable::drop_owner`] of a caller that is done (not abandoned), after running
    /// `f` on the context under the same lock while it is live.
    pub(crate) fn finish_with(&self, t: &InvokeTicket, f: impl FnOnce(CtxState, &mut Ctx)) {
        let _ = self
            .table
            .finish_with(t.to_ticket(), TxOutcome::Cancelled, |state, c| {
                f(ctx_state(state, c), c)
            });
    }

    pub(crate) fn drop_owner(&self, t: &InvokeTicket, abandoned: bool) {
        if abandoned {
            let _ = self.with(t, |_, c| {
                c.resumable = true;
                Ok(())
            });
        }
        // `Cancelled`: a timeout is counted by the caller, whatever state the call is in.
        let _ = self.table.finish(t.to_ticket(), TxOutcome::Cancelled);
    }

    /// The receive path: complete context `id` with `retval`. Never releases memory; the
    /// outcome is counted before the completion becomes visible to the waiter (so a caller
    /// that sees its call done also sees it counted); the waiter is woken after the lock is
    /// dropped.
    pub(crate) fn complete(&self, id: CtxId, retval: i32) -> RxOutcome {
        let Some(idx) = u32::from(id.slot_id()).checked_sub(1) else {
            // Slot id 0 is never issued.
            Counters::bump(&self.counters().unknown_replies);
            return RxOutcome::Unknown;
        };
        let r = self.table.on_reply_id(
            idx,
            id.generation(),
            |c| c.pd == id.pd(),
            |_, c| {
                c.retval = retval;
                Ok(0)
            },
        );
        match r {
            ReplyOutcome::Completed => RxOutcome::Completed,
            ReplyOutcome::Late => RxOutcome::Late,
            ReplyOutcome::Duplicate => RxOutcome::Duplicate,
            ReplyOutcome::Rejected => RxOutcome::BadPd,
            // `deliver` never fails.
            ReplyOutcome::Unknown | ReplyOutcome::Failed => RxOutcome::Unknown,
        }
    }

    /// Resume an abandoned call of `session` with the same thread, handle and scalars
    /// (docs/protocols/fastrpc.md §12.6: a retry after a signal must not re-send, which would run
    /// the method twice and can hang a DSP thread). The caller becomes its owner again.
    pub(crate) fn resume(
        &self,
        session: u16,
        tid: i32,
        handle: u32,
        sc: Scalars,
    ) -> Option<InvokeTicket> {
        self.table
            .resume(|c| {
                let hit = c.resumable
                    && c.session == session
                    && c.tid == tid
                    && c.handle == handle
                    && c.sc == sc;
                if hit {
                    c.resumable = false;
                }
                hit
            })
            .map(|s| InvokeTicket::from_ticket(&s.ticket()))
    }

    /// Fail every in-flight context (of `session`, or all with `None`) with `err`: the DSP
    /// will not answer (restart) or may no longer touch the memory (teardown). Contexts whose
    /// owner is gone are marked for reaping. Returns how many were failed.
    pub(crate) fn fail_inflight(&self, session: Option<u16>, err: FastRpcError) -> usize {
        self.table.reclaim_where(
            err.into(),
            |c| session.is_none_or(|s| s == c.session),
            |_, _, c| c.failure = err,
            Waker::wake,
        )
    }

    /// Session teardown: release every context of `session` (failing in-flight ones first).
    /// Tickets the caller still holds become stale.
    pub(crate) fn release_session(&self, session: u16) -> usize {
        self.fail_inflight(Some(session), FastRpcError::ChannelDown);
        self.table.release_where(|c| c.session == session)
    }

    /// Finish releases the receive path deferred. Cheap when none are pending.
    pub(crate) fn reap(&self) -> usize {
        self.table.reap()
    }

    /// Contexts held only because the DSP may still use them (caller gone, no answer yet).
    pub(crate) fn zombies(&self) -> usize {
        self.table.zombies()
    }
}

/// A live context's state in FastRPC terms.
fn ctx_state(state: TransferState, c: &Ctx) -> CtxState {
    match state {
        TransferState::Done(_) => CtxState::Done(c.retval),
        TransferState::Failed(_) => CtxState::Failed(c.failure),
        TransferState::InFlight | TransferState::Free | TransferState::Abandoned => {
            CtxState::InFlight
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(t: &ContextTable) -> InvokeTicket {
        let it = t.alloc(0).unwrap();
        t.send(&it, |_| Ok(())).unwrap();
        it
    }

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
        let it = in_flight(&t);
        let (i, g) = (it.idx, it.generation);
        t.drop_owner(&it, true);
        assert_eq!(t.free_count(), 1, "DSP still holds it");
        assert_eq!(t.zombies(), 1);
        let id = CtxId::new(i as u8 + 1, g, 0);
        assert_eq!(
            t.complete(CtxId::new(i as u8 + 1, g + 1, 0), 0),
            RxOutcome::Unknown
        );
        assert_eq!(t.complete(id, 0), RxOutcome::Late);
        assert_eq!(t.free_count(), 1, "receive path never frees");
        assert_eq!(t.complete(id, 0), RxOutcome::Duplicate);
        assert_eq!(t.reap(), 1);
        assert_eq!(t.free_count(), 2);
        assert_eq!(t.complete(id, 0), RxOutcome::Unknown, "stale generation");
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
            t.complete(CtxId(0), 0),
            RxOutcome::Unknown,
            "id 0 is never issued"
        );
        assert_eq!(
            t.complete(CtxId(0x20), 0),
            RxOutcome::Unknown,
            "beyond the table"
        );
    }

    #[test]
    fn a_context_being_built_takes_no_answer_and_pd_bits_are_checked() {
        let t = ContextTable::new(1, 1).unwrap();
        let it = t.alloc(0).unwrap();
        let id = CtxId::new(1, it.generation, 0);
        assert_eq!(t.complete(id, 0), RxOutcome::Unknown, "not sent yet");
        t.send(&it, |c| {
            c.pd = 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(t.complete(id, 0), RxOutcome::BadPd);
        assert_eq!(t.with(&it, |s, _| Ok(s)), Ok(CtxState::InFlight));
        assert_eq!(
            t.complete(CtxId::new(1, it.generation, 1), -3),
            RxOutcome::Completed
        );
        assert_eq!(t.with(&it, |s, _| Ok(s)), Ok(CtxState::Done(-3)));
        t.drop_owner(&it, false);
        assert_eq!(t.free_count(), 1);
    }

    #[test]
    fn resume_takes_back_only_an_abandoned_call_of_the_same_thread() {
        let t = ContextTable::new(2, 1).unwrap();
        let it = t.alloc(3).unwrap();
        t.send(&it, |c| {
            (c.tid, c.handle, c.sc) = (7, 0x20, Scalars(0x0202_0000));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            t.resume(3, 7, 0x20, Scalars(0x0202_0000)),
            None,
            "still owned"
        );
        t.drop_owner(&it, true);
        assert_eq!(
            t.resume(3, 8, 0x20, Scalars(0x0202_0000)),
            None,
            "other thread"
        );
        assert_eq!(
            t.resume(2, 7, 0x20, Scalars(0x0202_0000)),
            None,
            "other session"
        );
        let back = t.resume(3, 7, 0x20, Scalars(0x0202_0000)).unwrap();
        assert_eq!((back.idx, back.generation), (it.idx, it.generation));
        assert_eq!(
            t.complete(CtxId::new(1, it.generation, 0), 5),
            RxOutcome::Completed
        );
        assert_eq!(t.with(&back, |s, _| Ok(s)), Ok(CtxState::Done(5)));
    }

    #[test]
    fn session_teardown_fails_and_releases_only_that_session() {
        let t = ContextTable::new(3, 1).unwrap();
        let a = in_flight(&t);
        let b = t.alloc(1).unwrap();
        t.send(&b, |_| Ok(())).unwrap();
        let building = t.alloc(0).unwrap();
        assert_eq!(
            t.release_session(0),
            1,
            "the reserved context is its starter's"
        );
        assert_eq!(t.with(&a, |s, _| Ok(s)), Err(FastRpcError::InvalidArgument));
        assert_eq!(t.with(&b, |s, _| Ok(s)), Ok(CtxState::InFlight));
        assert_eq!(t.fail_inflight(None, FastRpcError::RemoteReset), 1);
        assert_eq!(
            t.with(&b, |s, _| Ok(s)),
            Ok(CtxState::Failed(FastRpcError::RemoteReset))
        );
        t.drop_owner(&building, false);
        assert_eq!(t.free_count(), 2);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn in_flight(t: &ContextTable) -> InvokeTicket {
        let it = t.alloc(0).unwrap();
        t.send(&it, |_| Ok(())).unwrap();
        it
    }

    /// The caller gives up while the late reply arrives: whichever wins, the context is
    /// released exactly once, and never by the receive path itself.
    #[test]
    fn loom_late_reply_races_abandon() {
        loom::model(|| {
            let t = Arc::new(ContextTable::new(1, 1).unwrap());
            let it = in_flight(&t);
            let g = it.generation;
            let t2 = t.clone();
            let rx = loom::thread::spawn(move || {
                let o = t2.complete(CtxId::new(1, g, 0), 0);
                assert!(matches!(o, RxOutcome::Completed | RxOutcome::Late));
                // The receive path never frees.
                o
            });
            t.drop_owner(&it, true);
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
            let it = in_flight(&t);
            let g = it.generation;
            let t2 = t.clone();
            let rx = loom::thread::spawn(move || t2.complete(CtxId::new(1, g, 0), 7));
            let failed = t.fail_inflight(None, FastRpcError::RemoteReset);
            let o = rx.join().unwrap();
            assert_eq!(
                failed == 1,
                o != RxOutcome::Completed,
                "exactly one ends the call"
            );
            let st = t.with(&it, |s, _| Ok(s)).unwrap();
            assert!(matches!(
                st,
                CtxState::Done(7) | CtxState::Failed(FastRpcError::RemoteReset)
            ));
            t.drop_owner(&it, false);
            assert_eq!(t.free_count(), 1);
        });
    }
}
