//! [`TransferTable`]: the per-transfer state machine every backend shares.
//!
//! One entry per pool buffer (the entry index is the buffer index; a table with generations has
//! no buffers, an index-only free list numbers its entries), each with its generation,
//! [`TransferState`], wire token, waker and whether the remote holds the buffer, plus a
//! backend-specific part `E` (the endpoint a reply must come from, a bulk buffer travelling with
//! the transfer...). The table owns the pieces a transfer reserves — the [`MsgPool`] buffer and
//! the [`TokenAllocator`] token — and the [`Counters`], so reserving with busy counting, the
//! state transitions, token quarantine and the counter bumps are written once. Its entries are
//! locked one by one ([`Shared`]) or, for a table behind the backend's own lock, not at all
//! ([`Exclusive`]). Where its wire ids come from is its other type parameter ([`IdSource`],
//! `ids.rs`): [`Tokens`] (the default), or [`Generations`] for a table made by
//! [`TransferTable::with_generations`], which names transfers by entry index and a table-wide
//! generation instead of tokens, reserves before it sends, and never frees on the reply path
//! (`generations.rs`).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::task::Waker;

use crate::pool::{MsgPool, PoolBuf};
use crate::stats::{Counters, Stats};
use crate::sync::{AtomicUsize, CachePadded, Ordering};
use crate::token::{Token, TokenAllocator};
use crate::transport::{Ticket, TxOutcome};
use crate::{Error, ProtocolError, Result};

mod generations;
mod ids;
mod locking;

pub use ids::{EntryPart, Generations, IdSource, Tokens};
pub use locking::{Exclusive, Locking, Shared};

/// Where a transfer is in its life; see [`TransferTable`] for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// No transfer: the entry's buffer is in the pool and it has no token.
    Free,
    /// Sent; the remote holds the buffer until it replies.
    InFlight,
    /// Replied: the reply's length in bytes, in the entry's buffer.
    Done(usize),
    /// Ended without a usable reply (a malformed reply, the channel going down...). The remote
    /// may still hold the buffer (see [`TransferTable::fail_pending`]).
    Failed(Error),
    /// Given up on by the caller while the remote still held the buffer: buffer and token stay
    /// reserved until the remote gives them back.
    Abandoned,
}

/// What [`TransferTable::on_reply`] did with a reply (each case is also counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// The transfer is done (`completed`).
    Completed,
    /// The reply was malformed: the transfer failed (`protocol_errors`; `unknown_replies` when
    /// the error is [`ProtocolError::UnknownToken`], a reply naming another transfer).
    Failed,
    /// The transfer had been given up on, or had already failed: the entry is free again, or
    /// its buffer back (`late_replies`).
    Late,
    /// The transfer already had its reply, or (for [`TransferTable::on_reply_at`]) the remote
    /// returned a buffer it did not hold (`duplicate_replies`).
    Duplicate,
    /// No transfer in flight has this token (`unknown_replies`).
    Unknown,
    /// The backend's check refused the reply (`protocol_errors`); the transfer is left as it
    /// was.
    Rejected,
}

/// A transfer just started by [`TransferTable::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedTransfer {
    /// The wire token.
    pub token: Token,
    /// The entry (and pool buffer) index.
    pub slot: u32,
    /// The entry's generation.
    pub generation: u32,
}

impl StartedTransfer {
    /// The caller's ticket for this transfer.
    pub const fn ticket(&self) -> Ticket {
        Ticket::new(self.token.0, self.slot, self.generation)
    }
}

/// One transfer's entry. `repr(C)`, the fields every step reads first: with the entry's lock
/// word in front of it (the lock shim's, and a `RefCell`'s borrow flag, come before the value
/// they hold) and each entry on lines of its own (`TransferTable::entries`), the lock, the
/// names a ticket is matched on, the state and the buffer are one cache line, whatever the
/// backend's part (`extra`, last) weighs. In the order Rust chose they spanned two lines in
/// some backends, and a step that matched a ticket took both (docs/benchmarks/changes.md, "The
/// transfer table's entries on lines of their own").
#[repr(C)]
struct Entry<E, I: IdSource> {
    generation: u32,
    token: u32,
    state: TransferState,
    /// What the entry holds (its buffer, or its index); `Some` whenever the state is not
    /// `Free`.
    buf: Option<I::Buf>,
    /// Whether the remote holds the buffer (the loan). The table's own handle (`buf`) keeps the
    /// buffer out of the pool for as long as this is set, since an entry is freed only with the
    /// loan back; so the pool's own loan count is not used (it would count the same loan twice,
    /// at two atomic read-modify-writes per transfer).
    lent: bool,
    /// Deferred-free tables only: the caller gave up and the remote gave the buffer back (or
    /// the transfer was swept); `state` holds the outcome and the next ordinary entry
    /// ([`TransferTable::reap`]) frees the entry. No ticket matches it (unless resumed).
    reap: bool,
    waker: Option<Waker>,
    /// This entry's share of [`Stats::sent`] and [`Stats::completed`] (see [`EntryCounts`]).
    counts: EntryCounts,
    extra: E,
}

/// An entry behind its lock (or `RefCell`), on lines of its own.
type EntryCell<E, L, I> = CachePadded<<L as Locking>::Cell<Entry<E, I>>>;

/// The two counters every round trip moves, kept per entry and changed only while the entry is
/// held, so counting costs a plain add instead of an atomic read-modify-write on a line every
/// caller shares (two per round trip, against 23 to 42 in all: docs/benchmarks/changes.md,
/// "Counted under the entry's lock"). [`TransferTable::stats`] adds them up.
#[derive(Debug, Clone, Copy, Default)]
struct EntryCounts {
    /// Loans to the remote ([`Entry::lend`], from [`TransferTable::start_with`] and
    /// [`TransferTable::send_with`]), less those taken back as never sent
    /// ([`Entry::take_back_unsent`], from [`TransferTable::abort`] and
    /// [`TransferTable::fail_sent`]).
    sent: u64,
    /// Replies that completed their transfer.
    completed: u64,
}

impl<E, I: IdSource> Entry<E, I> {
    /// The remote is lent the buffer: `lent`, counted in `sent`.
    #[inline]
    fn lend(&mut self) {
        self.lent = true;
        self.counts.sent = self.counts.sent.wrapping_add(1);
    }

    /// The loan, if out, ends as never sent (the message did not reach the remote): `lent`
    /// off, and off the `sent` count it went on in [`Entry::lend`].
    #[inline]
    fn take_back_unsent(&mut self) {
        if self.lent {
            self.lent = false;
            self.counts.sent = self.counts.sent.wrapping_sub(1);
        }
    }

    fn matches(&self, t: &Ticket) -> bool {
        self.generation == t.generation()
            && self.token == t.token()
            && !self.reaped()
            && !matches!(self.state, TransferState::Free)
    }

    /// Settled and waiting for [`TransferTable::reap`] (never, in a table that frees on the
    /// reply path).
    #[inline]
    fn reaped(&self) -> bool {
        I::DEFERRED_FREE && self.reap
    }

    /// The state, buffer and backend part of a live transfer (not free, not abandoned): what
    /// [`TransferTable::inspect`] and [`TransferTable::finish_with`] show a backend.
    #[inline]
    fn live(&mut self) -> Option<(TransferState, &I::Buf, &mut E)> {
        match (self.state, self.buf.as_ref()) {
            (TransferState::Abandoned, _) | (_, None) => None,
            (state, Some(buf)) => Some((state, buf, &mut self.extra)),
        }
    }

    /// Reserved by [`TransferTable::reserve`], not sent yet.
    fn reserved(&self) -> bool {
        matches!(self.state, TransferState::InFlight) && !self.lent
    }
}

/// The transfers of one transport: entries, their buffers and tokens, and the counters.
///
/// The state machine (drawn in `docs/architecture.md`, "The shared transfer table"):
///
/// - `Free → InFlight` ([`TransferTable::start`]): buffer and token reserved, the buffer lent to
///   the remote, the token published for the reply path.
/// - `InFlight → Done | Failed` ([`TransferTable::on_reply`], [`TransferTable::on_reply_at`],
///   [`TransferTable::fail_all`], [`TransferTable::reclaim_all`]): the remote gave the buffer
///   back (or the channel went down); the waker is woken (or handed to the caller).
/// - `InFlight → Abandoned` ([`TransferTable::finish`] before the reply): the caller gave up
///   while the remote still holds the buffer. Buffer and token stay reserved (the token is
///   *quarantined*), so a late reply can never complete a newer transfer.
/// - `Abandoned → Free` (the late reply, counted in `late_replies`, or
///   [`TransferTable::fail_all`] / [`TransferTable::reclaim_all`]).
/// - `Done | Failed → Free` ([`TransferTable::finish`], [`TransferTable::take`]).
/// - `InFlight → Failed` with the buffer still lent ([`TransferTable::fail_pending`]): the
///   caller is told at once; the buffer comes back with the reply or
///   [`TransferTable::reclaim_all`], and a [`TransferTable::finish`] before that abandons it.
///
/// A table with generations ([`Generations`], made by [`TransferTable::with_generations`]) adds:
///
/// - `Free → InFlight`, not lent ([`TransferTable::reserve`]): reserved while the backend builds
///   the message; no reply reaches it, [`TransferTable::finish`] frees it, and
///   [`TransferTable::send_with`] lends it (in flight proper).
/// - `Abandoned →` reaped ([`TransferTable::on_reply_id`], [`TransferTable::reclaim_where`]):
///   the reply path keeps the outcome (`Done`/`Failed`) and marks the entry; no ticket reaches
///   it, and [`TransferTable::reap`], run by the next ordinary entry, frees it.
/// - Abandoned or reaped `→` held again ([`TransferTable::resume`]): a retry takes the transfer
///   back (in flight, or with its outcome).
/// - Any but reserved `→ Free` ([`TransferTable::release_where`]): a session torn down.
///
/// Concurrency ([`Shared`], the default): each entry sits behind the one lock shim
/// ([`crate::sync::Lock`]); the token → entry map is atomics, and a reply found through it is
/// checked again under the entry's lock (token and state), so a stale map read can only lead to
/// an `unknown_replies` count. With [`Exclusive`] the entries have no lock of their own and the
/// table is not `Sync`: the backend keeps it behind its lock. Nothing allocates after
/// [`TransferTable::new`].
///
/// The id source `I` ([`Tokens`], the default, or [`Generations`]) is chosen at compile time:
/// the transitions are written once, and what differs (taking and freeing an entry, the wire id,
/// the deferred free) is the id source's, so a token table carries none of the generation
/// table's branches. The backend part `E` goes back to idle through [`EntryPart`] when its
/// entry is freed.
///
/// A backend's `Transport` calls, in order (here its part `E` is the endpoint a reply must come
/// from):
///
/// ```
/// use fwipc_transport_api::{ReplyOutcome, TransferTable, TxOutcome};
///
/// let table = TransferTable::<u32>::new(4, 64, 8)?; // 4 transfers of 64 bytes, 8-bit tokens
/// // send: reserve, then put `started.token` on the wire with the request.
/// let started = table.start(b"ping", 7)?;
/// let ticket = started.ticket();
/// // The receive path, with a parsed reply (token, source endpoint, payload):
/// let (token, source, payload) = (started.token.0, 7, b"pong");
/// let r = table.on_reply(token, |ep| *ep == source, |buf, _| {
///     buf.write(payload).map(|()| payload.len())
/// });
/// assert_eq!(r, ReplyOutcome::Completed);
/// assert_eq!(table.poll(&ticket), Ok(true)); // poll_done
/// let mut out = [0u8; 64];
/// assert_eq!(table.fetch(&ticket, &mut out), Ok(4)); // fetch_response
/// table.finish(ticket, TxOutcome::Done)?; // mark_txdone
/// assert_eq!((table.stats().completed, table.stats().pool_free), (1, 4));
/// # Ok::<(), fwipc_transport_api::Error>(())
/// ```
pub struct TransferTable<E, L: Locking = Shared, I: IdSource = Tokens> {
    ids: I::Ids,
    /// Each on lines of its own (`CachePadded`), so an entry's first line holds its lock and the
    /// fields every step reads ([`Entry`]), and no entry shares a line with its neighbours,
    /// which other transfers use at the same time.
    entries: Box<[EntryCell<E, L, I>]>,
    counters: Counters,
    /// Entries marked for [`TransferTable::reap`] (a hint that lets it skip the scan; a table
    /// that frees on the reply path never marks one).
    reap_pending: AtomicUsize,
}

impl<E, L: Locking, I: IdSource> core::fmt::Debug for TransferTable<E, L, I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TransferTable")
            .field("capacity", &I::capacity(&self.ids))
            .field("free", &I::free_count(&self.ids))
            .field("tokens_in_use", &I::tokens_in_use(&self.ids))
            .finish_non_exhaustive()
    }
}

impl<E: Default, L: Locking> TransferTable<E, L, Tokens> {
    /// `count` transfers of up to `buf_size` bytes, with `token_bits`-wide tokens (at least as
    /// many tokens as transfers). `InvalidArgument` for sizes [`MsgPool::new`] or
    /// [`TokenAllocator::new`] refuse, or too few tokens.
    pub fn new(count: usize, buf_size: usize, token_bits: u32) -> Result<Self> {
        let pool = MsgPool::new(count, buf_size)?;
        let tokens = TokenAllocator::new(token_bits)?;
        if (tokens.capacity() as usize) < count {
            return Err(Error::InvalidArgument);
        }
        Ok(Self::build(
            count,
            ids::TokenIds { pool, tokens },
            E::default,
        ))
    }
}

impl<E, L: Locking, I: IdSource> TransferTable<E, L, I> {
    fn build(count: usize, ids: I::Ids, mut part: impl FnMut() -> E) -> Self {
        let entries: Vec<EntryCell<E, L, I>> = (0..count)
            .map(|_| {
                CachePadded::new(L::cell(Entry {
                    generation: 0,
                    state: TransferState::Free,
                    token: 0,
                    buf: None,
                    lent: false,
                    waker: None,
                    reap: false,
                    counts: EntryCounts::default(),
                    extra: part(),
                }))
            })
            .collect();
        TransferTable {
            ids,
            entries: entries.into_boxed_slice(),
            counters: Counters::default(),
            reap_pending: AtomicUsize::new(0),
        }
    }
}

impl<E: EntryPart<Tokens>, L: Locking> TransferTable<E, L, Tokens> {
    /// Reserve a buffer and a token (each refusal is `Busy`, counted in `busy`), copy `payload`
    /// into the buffer, lend the buffer to the remote and publish the transfer as in flight
    /// with the backend's part `extra`. `TooLarge` if `payload` does not fit a buffer.
    pub fn start(&self, payload: &[u8], extra: E) -> Result<StartedTransfer> {
        if payload.len() > self.ids.pool.buf_size() {
            return Err(Error::TooLarge);
        }
        self.start_with(|_, buf| buf.write(payload).map(|()| extra))
    }

    /// A reply for `token` arrived. `check` sees the backend's part first (false: the reply is
    /// refused as a stray or forged message and the transfer left alone); then the remote's loan
    /// comes back, and for a live transfer `deliver` writes the reply into the buffer and
    /// returns its length (`Err`: the reply is malformed and the transfer fails with it). The
    /// waker is woken.
    pub fn on_reply(
        &self,
        token: u32,
        check: impl FnOnce(&E) -> bool,
        deliver: impl FnOnce(&PoolBuf, &mut E) -> Result<usize>,
    ) -> ReplyOutcome {
        self.reply_by_token(token, None, check, deliver)
    }

    /// [`TransferTable::on_reply`] for a reply that names its transfer twice, by `token` and by
    /// entry (buffer) index `slot`, as a request carried both: a reply whose two names disagree
    /// (the token is another entry's) is refused as `Rejected` and completes nothing, so a
    /// damaged or forged token cannot complete another transfer that holds the token it now
    /// reads. A token no entry holds is `Unknown`, as for `on_reply`.
    pub fn on_reply_named(
        &self,
        token: u32,
        slot: u32,
        check: impl FnOnce(&E) -> bool,
        deliver: impl FnOnce(&PoolBuf, &mut E) -> Result<usize>,
    ) -> ReplyOutcome {
        self.reply_by_token(token, Some(slot), check, deliver)
    }

    /// [`TransferTable::on_reply`], and with `named` `Some(slot)`
    /// [`TransferTable::on_reply_named`]: the entry that holds `token`, refused unless it is
    /// entry `slot`. The entry is the one looked up: its token is checked under its lock.
    fn reply_by_token(
        &self,
        token: u32,
        named: Option<u32>,
        check: impl FnOnce(&E) -> bool,
        deliver: impl FnOnce(&PoolBuf, &mut E) -> Result<usize>,
    ) -> ReplyOutcome {
        let Some(slot) = self.lookup(token) else {
            return self.count(ReplyOutcome::Unknown);
        };
        if named.is_some_and(|n| n != slot) {
            return self.count(ReplyOutcome::Rejected);
        }
        let Some(entry) = self.entries.get(slot as usize) else {
            return self.count(ReplyOutcome::Unknown);
        };
        let e = L::hold(entry);
        if e.token != token {
            return self.count(ReplyOutcome::Unknown);
        }
        self.reply_to(e, check, deliver)
    }

    /// The entry the transfer with `token` is on, if one is published (an Acquire load: the
    /// entry is visible).
    fn lookup(&self, token: u32) -> Option<u32> {
        self.ids.tokens.lookup(token)
    }

    /// [`crate::Transport::fetch_response`]: copy the reply into `out`. `TooLarge` if it does
    /// not fit, the transfer's error if it failed, `InvalidArgument` before the reply.
    pub fn fetch(&self, t: &Ticket, out: &mut [u8]) -> Result<usize> {
        self.with(t, |e| match (e.state, &e.buf) {
            (TransferState::Done(len), Some(buf)) => {
                let dst = out.get_mut(..len).ok_or(Error::TooLarge)?;
                Ok(buf.read_into(dst))
            }
            (TransferState::Failed(err), _) => Err(err),
            _ => Err(Error::InvalidArgument),
        })?
    }

    /// The pool the transfers' buffers come from.
    pub fn pool(&self) -> &MsgPool {
        &self.ids.pool
    }
}

impl<E: EntryPart<I>, L: Locking, I: IdSource> TransferTable<E, L, I> {
    /// [`TransferTable::start`] for a backend that writes the buffer itself, or whose message
    /// carries the token: reserve a buffer and a token (each refusal is `Busy`, counted in
    /// `busy`), then `prepare` writes the buffer (the token at hand) and returns the backend's
    /// part. Its error undoes the reservation and is returned (counted by nobody: a backend that
    /// reports back-pressure from `prepare` counts it itself).
    #[inline]
    pub fn start_with(
        &self,
        prepare: impl FnOnce(Token, &I::Buf) -> Result<E>,
    ) -> Result<StartedTransfer> {
        let (slot, buf, token, wide) = self.take_entry()?;
        let extra = match prepare(token, &buf) {
            Ok(x) => x,
            Err(err) => {
                I::release_id(&self.ids, token.0);
                I::put_back(&self.ids, buf);
                return Err(err);
            }
        };
        let generation = {
            let mut e = L::hold(&self.entries[slot as usize]);
            // A free entry has no waker (`free` dropped it, and no ticket reaches a free entry
            // to register one), so there is none to drop here.
            debug_assert!(e.waker.is_none() && e.buf.is_none());
            e.generation = wide.unwrap_or(e.generation.wrapping_add(1));
            e.state = TransferState::InFlight;
            e.token = token.0;
            e.buf = Some(buf);
            e.lend();
            e.extra = extra;
            // Published while the entry is held, so nothing can free it (and its token) first.
            I::publish(&self.ids, token.0, slot);
            e.generation
        };
        Ok(StartedTransfer {
            token,
            slot,
            generation,
        })
    }

    /// Take a free entry (its index and what it holds), then the next wire id (the token, and
    /// the generation for a table with generations: [`IdSource::next_id`]). Each refusal is
    /// `Busy`, counted in `busy`; a refused id gives the entry back.
    #[inline]
    fn take_entry(&self) -> Result<(u32, I::Buf, Token, Option<u32>)> {
        let (slot, buf) =
            I::take(&self.ids).inspect_err(|_| Counters::bump(&self.counters.busy))?;
        match I::next_id(&self.ids) {
            Ok((token, wide)) => Ok((slot, buf, token, wide)),
            Err(err) => {
                Counters::bump(&self.counters.busy);
                I::put_back(&self.ids, buf);
                Err(err)
            }
        }
    }

    /// Undo a [`TransferTable::start`] whose message never reached the remote: the loan comes
    /// back and the entry is free. Counts nothing.
    pub fn abort(&self, started: StartedTransfer) {
        let Some(entry) = self.entries.get(started.slot as usize) else {
            return;
        };
        let mut e = L::hold(entry);
        // Whatever the remote did meanwhile (a forged reply to a message it never got), the
        // transfer has no caller: free it.
        if e.generation == started.generation && e.token == started.token.0 {
            e.take_back_unsent();
            self.free(&mut e);
        }
    }

    /// The reply to a live entry `e` (its id checked): the state decides, then `check`, then
    /// the remote's loan comes back (see [`TransferTable::on_reply`]). Wakes after letting go.
    #[inline]
    fn reply_to(
        &self,
        mut e: L::Guard<'_, Entry<E, I>>,
        check: impl FnOnce(&E) -> bool,
        deliver: impl FnOnce(&I::Buf, &mut E) -> Result<usize>,
    ) -> ReplyOutcome {
        match e.state {
            _ if e.reaped() => return self.count(ReplyOutcome::Duplicate),
            // Reserved, not sent: the remote cannot know this transfer yet.
            TransferState::InFlight if !e.lent => return self.count(ReplyOutcome::Unknown),
            TransferState::InFlight | TransferState::Abandoned => {}
            TransferState::Done(_) | TransferState::Failed(_) => {
                return self.count(ReplyOutcome::Duplicate)
            }
            TransferState::Free => return self.count(ReplyOutcome::Unknown),
        }
        if !check(&e.extra) {
            return self.count(ReplyOutcome::Rejected);
        }
        let (outcome, waker) = self.settle(&mut e, deliver);
        drop(e);
        if let Some(w) = waker {
            w.wake();
        }
        outcome
    }

    /// A reply that names its transfer by entry (buffer) index `slot`, as a remote returning a
    /// buffer does (a virtio used-ring element). A buffer the remote does not hold is a
    /// `Duplicate`. Otherwise `give_back` sees it first (the remote hands it back: un-share,
    /// copy a bounce buffer back...), then the loan is over: an abandoned transfer is freed
    /// (`Late`), a failed one keeps its error (`Late`), and for one in flight `deliver` checks
    /// the reply and returns its length (`Err`: the transfer fails with it). The waker of a
    /// completed or failed transfer is returned for the caller to wake, after releasing whatever
    /// lock it holds the table under.
    #[inline]
    pub fn on_reply_at(
        &self,
        slot: u32,
        give_back: impl FnOnce(&I::Buf, &mut E),
        deliver: impl FnOnce(&I::Buf, &mut E) -> Result<usize>,
    ) -> (ReplyOutcome, Option<Waker>) {
        let Some(entry) = self.entries.get(slot as usize) else {
            return (self.count(ReplyOutcome::Duplicate), None);
        };
        let mut e = L::hold(entry);
        if !e.lent {
            return (self.count(ReplyOutcome::Duplicate), None);
        }
        if let Entry {
            buf: Some(buf),
            extra,
            ..
        } = &mut *e
        {
            give_back(buf, extra);
        }
        if let TransferState::Failed(_) = e.state {
            e.lent = false;
            return (self.count(ReplyOutcome::Late), None);
        }
        self.settle(&mut e, deliver)
    }

    /// The remote gave back the buffer of a transfer in flight or abandoned: free an abandoned
    /// one, else let `deliver` decide. Counts; returns the waker to wake.
    #[inline]
    fn settle(
        &self,
        e: &mut Entry<E, I>,
        deliver: impl FnOnce(&I::Buf, &mut E) -> Result<usize>,
    ) -> (ReplyOutcome, Option<Waker>) {
        // The remote gives the buffer back with its reply.
        e.lent = false;
        let abandoned = matches!(e.state, TransferState::Abandoned);
        if abandoned && !I::DEFERRED_FREE {
            self.free(e);
            return (self.count(ReplyOutcome::Late), None);
        }
        let Entry {
            buf, extra, state, ..
        } = e;
        // Not reached with `None`: a live entry always has its buffer.
        let result = buf
            .as_ref()
            .map_or(Err(Error::InvalidArgument), |b| deliver(b, extra));
        *state = match result {
            Ok(len) => TransferState::Done(len),
            Err(err) => TransferState::Failed(err),
        };
        if I::DEFERRED_FREE && abandoned {
            // Deferred free: the outcome is kept (for a resume) and `reap` frees the entry.
            self.mark_reap(e);
            return (self.count(ReplyOutcome::Late), None);
        }
        let outcome = match result {
            Ok(_) => {
                // Under the entry (see `EntryCounts`), not in the shared `Counters`.
                e.counts.completed = e.counts.completed.wrapping_add(1);
                ReplyOutcome::Completed
            }
            Err(err) => self.count_failed(err),
        };
        // Counted before the waker runs, so a woken caller's `stats` already shows it.
        (outcome, e.waker.take())
    }

    /// The channel went down (shutdown, remote reset): every transfer in flight fails with
    /// `err` and is woken, every abandoned one is freed, and every loan comes back.
    pub fn fail_all(&self, err: Error) {
        self.reclaim_all(err, |_, _, _| {}, Waker::wake);
    }

    /// Every transfer in flight fails with `err` at once, its buffer still lent to the remote
    /// (which may yet write it): the channel is going down and the buffers come back later,
    /// with their replies or [`TransferTable::reclaim_all`]. Each one's waker is handed to
    /// `wake`, with no entry held.
    pub fn fail_pending(&self, err: Error, mut wake: impl FnMut(Waker)) {
        for entry in self.entries.iter() {
            let mut e = L::hold(entry);
            if matches!(e.state, TransferState::InFlight) {
                e.state = TransferState::Failed(err);
                let waker = e.waker.take();
                drop(e);
                if let Some(w) = waker {
                    wake(w);
                }
            }
        }
    }

    /// The remote gave every buffer back at once (it was reset, or is gone): for each entry it
    /// held, `give_back` sees the index, buffer and backend part first (un-share it, or keep
    /// the memory from being reused when the remote can still reach it), then the loan is over:
    /// a transfer in flight fails with `err` (its waker handed to `wake`, with no entry held),
    /// an abandoned one is freed, a failed one keeps its error.
    pub fn reclaim_all(
        &self,
        err: Error,
        give_back: impl FnMut(u32, &I::Buf, &mut E),
        wake: impl FnMut(Waker),
    ) {
        self.reclaim_where(err, |_| true, give_back, wake);
    }

    /// [`TransferTable::reclaim_all`] for the entries whose backend part `select` picks (one
    /// session's transfers); returns how many were in flight or abandoned. In a deferred-free
    /// table an abandoned one is marked for [`TransferTable::reap`] instead of freed.
    pub fn reclaim_where(
        &self,
        err: Error,
        mut select: impl FnMut(&E) -> bool,
        mut give_back: impl FnMut(u32, &I::Buf, &mut E),
        mut wake: impl FnMut(Waker),
    ) -> usize {
        let mut n = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            let mut e = L::hold(entry);
            if !e.lent || !select(&e.extra) {
                continue;
            }
            if let Entry {
                buf: Some(buf),
                extra,
                ..
            } = &mut *e
            {
                give_back(i as u32, buf, extra);
            }
            e.lent = false;
            match e.state {
                TransferState::InFlight => {
                    n += 1;
                    e.state = TransferState::Failed(err);
                    let waker = e.waker.take();
                    drop(e);
                    if let Some(w) = waker {
                        wake(w);
                    }
                }
                TransferState::Abandoned if I::DEFERRED_FREE => {
                    n += 1;
                    e.state = TransferState::Failed(err);
                    self.mark_reap(&mut e);
                }
                TransferState::Abandoned => {
                    n += 1;
                    self.free(&mut e);
                }
                TransferState::Free | TransferState::Done(_) | TransferState::Failed(_) => {}
            }
        }
        n
    }

    /// The transport's counters, for the events the table does not count itself. The table
    /// counts its transfers' `sent` and `completed` in their entries, not here: read them
    /// through [`TransferTable::stats`], which adds both.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Tokens reserved right now (live transfers plus quarantined ones; 0 for a table with
    /// generations, which reserves none).
    pub fn tokens_in_use(&self) -> u32 {
        I::tokens_in_use(&self.ids)
    }

    /// The counters and the occupancy of the entries (as the pool's).
    pub fn stats(&self) -> Stats {
        self.stats_with_pool(I::capacity(&self.ids), I::free_count(&self.ids))
    }

    /// The counters, with the occupancy of a pool the backend keeps beside the table. Holds
    /// each entry in turn to add up its share of `sent` and `completed`; a transfer that
    /// moves meanwhile is counted or not, as with any snapshot taken while transfers run.
    pub fn stats_with_pool(&self, pool_capacity: usize, pool_free: usize) -> Stats {
        let mut s = self.counters.snapshot(pool_capacity, pool_free);
        let (mut sent, mut completed) = (0u64, 0u64);
        for entry in self.entries.iter() {
            let c = L::hold(entry).counts;
            sent = sent.wrapping_add(c.sent);
            completed = completed.wrapping_add(c.completed);
        }
        s.sent = s.sent.wrapping_add(sent);
        s.completed = s.completed.wrapping_add(completed);
        s
    }

    /// The state of the transfer `t` names; `InvalidArgument` for a stale or foreign ticket.
    #[inline]
    pub fn state(&self, t: &Ticket) -> Result<TransferState> {
        self.with(t, |e| e.state)
    }

    /// [`crate::Transport::poll_done`] on the state: `Ok(true)` when done, the error when
    /// failed, `Ok(false)` in flight, `InvalidArgument` otherwise.
    pub fn poll(&self, t: &Ticket) -> Result<bool> {
        match self.state(t)? {
            TransferState::Done(_) => Ok(true),
            TransferState::Failed(e) => Err(e),
            TransferState::InFlight => Ok(false),
            TransferState::Free | TransferState::Abandoned => Err(Error::InvalidArgument),
        }
    }

    /// [`crate::Transport::mark_txdone`]: a finished transfer is freed, and so is one reserved
    /// but never sent ([`TransferTable::reserve`]); one still in flight is abandoned
    /// (`timed_out` counted for [`TxOutcome::TimedOut`]) and keeps its buffer and token until
    /// the remote gives them back, and so does a failed one whose buffer the remote still holds
    /// ([`TransferTable::fail_pending`]). `InvalidArgument` for a stale ticket.
    #[inline]
    pub fn finish(&self, t: Ticket, outcome: TxOutcome) -> Result<()> {
        self.finish_with(t, outcome, |_, _| {})
    }

    /// [`TransferTable::finish`], after running `f` on the transfer under the same lock when
    /// it is live (not free, not abandoned: what [`TransferTable::inspect`] would run `f` on):
    /// a backend's last look at its part (a reply's trailer) without a second pass.
    #[inline]
    pub fn finish_with(
        &self,
        t: Ticket,
        outcome: TxOutcome,
        f: impl FnOnce(TransferState, &mut E),
    ) -> Result<()> {
        self.with(&t, |e| {
            if let Some((state, _, extra)) = e.live() {
                f(state, extra);
            }
            match e.state {
                TransferState::InFlight if !e.lent => self.free(e),
                TransferState::InFlight => {
                    if outcome == TxOutcome::TimedOut {
                        Counters::bump(&self.counters.timed_out);
                    }
                    e.state = TransferState::Abandoned;
                    e.waker = None;
                }
                TransferState::Done(_) | TransferState::Failed(_) if e.lent => {
                    e.state = TransferState::Abandoned;
                    e.waker = None;
                }
                TransferState::Done(_) | TransferState::Failed(_) => self.free(e),
                TransferState::Free | TransferState::Abandoned => {}
            }
        })
    }

    /// End the transfer `t` through `f`, which sees its state and the backend's part: on `Ok`
    /// the entry is freed, on `Err` left as it was (a bulk transfer taking its buffer back).
    pub fn take<R>(
        &self,
        t: &Ticket,
        f: impl FnOnce(TransferState, &mut E) -> Result<R>,
    ) -> Result<R> {
        self.with(t, |e| {
            let r = f(e.state, &mut e.extra)?;
            self.free(e);
            Ok(r)
        })?
    }

    /// Run `f` on the live transfer `t` names (not free, not abandoned): its state, its buffer
    /// and the backend's part (a backend's own `poll_done`, `fetch_response`...).
    /// `InvalidArgument` for a stale ticket.
    #[inline]
    pub fn inspect<R>(
        &self,
        t: &Ticket,
        f: impl FnOnce(TransferState, &I::Buf, &mut E) -> R,
    ) -> Result<R> {
        self.with(t, |e| {
            let (state, buf, extra) = e.live().ok_or(Error::InvalidArgument)?;
            Ok(f(state, buf, extra))
        })?
    }

    /// Ask for a wake-up when `t` completes; `false` for a stale ticket.
    pub fn register_waker(&self, t: &Ticket, waker: &Waker) -> bool {
        self.with(t, |e| {
            if !e.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                e.waker = Some(waker.clone());
            }
        })
        .is_ok()
    }

    /// Run `f` on the entry `t` names, under its lock; `InvalidArgument` for a stale ticket.
    #[inline]
    fn with<R>(&self, t: &Ticket, f: impl FnOnce(&mut Entry<E, I>) -> R) -> Result<R> {
        let entry = self
            .entries
            .get(t.slot() as usize)
            .ok_or(Error::InvalidArgument)?;
        let mut e = L::hold(entry);
        if !e.matches(t) {
            return Err(Error::InvalidArgument);
        }
        Ok(f(&mut e))
    }

    /// Whether the remote holds the buffer of entry `slot` (sent, not answered yet; `false` for
    /// a bad index).
    pub fn remote_holds(&self, slot: u32) -> bool {
        self.entries
            .get(slot as usize)
            .is_some_and(|entry| L::hold(entry).lent)
    }

    /// Free an entry: the loan if still out, the token (and its map entry), the buffer, the
    /// waker and the backend's part (reset in place: its storage stays with the entry).
    #[inline]
    fn free(&self, e: &mut Entry<E, I>) {
        e.lent = false;
        let held = e.buf.take();
        if held.is_some() {
            // Live (not `Free`): the id goes back.
            I::release_id(&self.ids, e.token);
        }
        if e.reaped() {
            e.reap = false;
            // Relaxed: a hint counter that only lets `reap` skip its scan; the entry itself is
            // guarded by its lock.
            self.reap_pending.fetch_sub(1, Ordering::Relaxed);
        }
        e.state = TransferState::Free;
        if let Some(buf) = held {
            I::put_back(&self.ids, buf);
        }
        e.waker = None;
        e.extra.reset();
    }

    fn count_failed(&self, err: Error) -> ReplyOutcome {
        Counters::bump(if err == Error::Protocol(ProtocolError::UnknownToken) {
            &self.counters.unknown_replies
        } else {
            &self.counters.protocol_errors
        });
        ReplyOutcome::Failed
    }

    /// Count a reply that did not complete its transfer (a completion is counted in its entry,
    /// by `settle`).
    fn count(&self, o: ReplyOutcome) -> ReplyOutcome {
        let c = &self.counters;
        Counters::bump(match o {
            ReplyOutcome::Completed => return o,
            ReplyOutcome::Failed | ReplyOutcome::Rejected => &c.protocol_errors,
            ReplyOutcome::Late => &c.late_replies,
            ReplyOutcome::Duplicate => &c.duplicate_replies,
            ReplyOutcome::Unknown => &c.unknown_replies,
        });
        o
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
