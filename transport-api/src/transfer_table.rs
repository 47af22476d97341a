//! [`TransferTable`]: the per-transfer state machine every backend shares.
//!
//! One entry per pool buffer (the entry index is the buffer index), each with its generation,
//! [`TransferState`], wire token, waker and whether the remote holds the buffer, plus a
//! backend-specific part `E` (the endpoint a reply must come from, a bulk buffer travelling with
//! the transfer...). The table owns the pieces a transfer reserves — the [`MsgPool`] buffer and
//! the [`TokenAllocator`] token — and the [`Counters`], so reserving with busy counting, the
//! state transitions, token quarantine and the counter bumps are written once.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::task::Waker;

use crate::pool::{MsgPool, PoolBuf};
use crate::stats::{Counters, Stats};
use crate::sync::{AtomicU32, Lock, Ordering};
use crate::token::{Token, TokenAllocator};
use crate::transport::{Ticket, TxOutcome};
use crate::{Error, Result};

/// Where a transfer is in its life; see [`TransferTable`] for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// No transfer: the entry's buffer is in the pool and it has no token.
    Free,
    /// Sent; the remote holds the buffer until it replies.
    InFlight,
    /// Replied: the reply's length in bytes, in the entry's buffer.
    Done(usize),
    /// Ended without a usable reply (a malformed reply, the channel going down...).
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
    /// The reply was malformed: the transfer failed (`protocol_errors`).
    Failed,
    /// The transfer had been given up on: the entry is free again (`late_replies`).
    Late,
    /// The transfer already had its reply (`duplicate_replies`).
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

struct Entry<E> {
    generation: u32,
    state: TransferState,
    token: u32,
    /// The local handle on the buffer; `Some` whenever the state is not `Free`.
    buf: Option<PoolBuf>,
    /// Whether the remote holds the buffer (the loan). The table's own handle (`buf`) keeps the
    /// buffer out of the pool for as long as this is set, since an entry is freed only with the
    /// loan back; so the pool's own loan count is not used (it would count the same loan twice,
    /// at two atomic read-modify-writes per transfer).
    lent: bool,
    waker: Option<Waker>,
    extra: E,
}

impl<E> Entry<E> {
    fn matches(&self, t: &Ticket) -> bool {
        self.generation == t.generation()
            && self.token == t.token()
            && self.state != TransferState::Free
    }
}

/// The transfers of one transport: entries, their buffers and tokens, and the counters.
///
/// The state machine (drawn in `docs/architecture.md`, "The shared transfer table"):
///
/// - `Free → InFlight` ([`TransferTable::start`]): buffer and token reserved, the buffer lent to
///   the remote, the token published for the reply path.
/// - `InFlight → Done | Failed` ([`TransferTable::on_reply`], [`TransferTable::fail_all`]): the
///   remote gave the buffer back (or the channel went down); the waker is woken.
/// - `InFlight → Abandoned` ([`TransferTable::finish`] before the reply): the caller gave up
///   while the remote still holds the buffer. Buffer and token stay reserved (the token is
///   *quarantined*), so a late reply can never complete a newer transfer.
/// - `Abandoned → Free` (the late reply, counted in `late_replies`, or [`TransferTable::fail_all`]).
/// - `Done | Failed → Free` ([`TransferTable::finish`], [`TransferTable::take`]).
///
/// Concurrency: each entry sits behind the one lock shim ([`crate::sync::Lock`]); the token →
/// entry map is atomics, and a reply found through it is checked again under the entry's lock
/// (token and state), so a stale map read can only lead to an `unknown_replies` count. Nothing
/// allocates after [`TransferTable::new`].
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
pub struct TransferTable<E> {
    pool: MsgPool,
    tokens: TokenAllocator,
    /// token → entry index + 1 (0: none).
    token_map: Box<[AtomicU32]>,
    entries: Box<[Lock<Entry<E>>]>,
    counters: Counters,
}

impl<E> core::fmt::Debug for TransferTable<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TransferTable")
            .field("pool", &self.pool)
            .field("tokens_in_use", &self.tokens.in_use())
            .finish_non_exhaustive()
    }
}

impl<E: Default> TransferTable<E> {
    /// `count` transfers of up to `buf_size` bytes, with `token_bits`-wide tokens (at least as
    /// many tokens as transfers). `InvalidArgument` for sizes [`MsgPool::new`] or
    /// [`TokenAllocator::new`] refuse, or too few tokens.
    pub fn new(count: usize, buf_size: usize, token_bits: u32) -> Result<Self> {
        let pool = MsgPool::new(count, buf_size)?;
        let tokens = TokenAllocator::new(token_bits)?;
        if (tokens.capacity() as usize) < count {
            return Err(Error::InvalidArgument);
        }
        let entries: Vec<Lock<Entry<E>>> = (0..count)
            .map(|_| {
                Lock::new(Entry {
                    generation: 0,
                    state: TransferState::Free,
                    token: 0,
                    buf: None,
                    lent: false,
                    waker: None,
                    extra: E::default(),
                })
            })
            .collect();
        Ok(TransferTable {
            pool,
            token_map: (0..tokens.capacity()).map(|_| AtomicU32::new(0)).collect(),
            tokens,
            entries: entries.into_boxed_slice(),
            counters: Counters::default(),
        })
    }

    /// Reserve a buffer and a token (each refusal is `Busy`, counted in `busy`), copy `payload`
    /// into the buffer, lend the buffer to the remote and publish the transfer as in flight
    /// with the backend's part `extra`. `TooLarge` if `payload` does not fit a buffer.
    pub fn start(&self, payload: &[u8], extra: E) -> Result<StartedTransfer> {
        if payload.len() > self.pool.buf_size() {
            return Err(Error::TooLarge);
        }
        let buf = self
            .pool
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        // Before the token: on an error the buffer goes back to the pool as it is dropped.
        buf.write(payload)?;
        let token = self
            .tokens
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        let slot = buf.index();
        let generation = {
            let mut e = self.entries[slot as usize].lock();
            e.generation = e.generation.wrapping_add(1);
            e.state = TransferState::InFlight;
            e.token = token.0;
            e.buf = Some(buf);
            e.lent = true;
            e.waker = None;
            e.extra = extra;
            e.generation
        };
        // Release: the entry (written above under its lock) is complete before a reply handler
        // can find it through the map.
        self.token_map[token.0 as usize].store(slot + 1, Ordering::Release);
        Ok(StartedTransfer {
            token,
            slot,
            generation,
        })
    }

    /// Undo a [`TransferTable::start`] whose message never reached the remote: the loan comes
    /// back and the entry is free. Counts nothing.
    pub fn abort(&self, started: StartedTransfer) {
        let Some(entry) = self.entries.get(started.slot as usize) else {
            return;
        };
        let mut e = entry.lock();
        // Whatever the remote did meanwhile (a forged reply to a message it never got), the
        // transfer has no caller: free it.
        if e.generation == started.generation && e.token == started.token.0 {
            self.free(&mut e);
        }
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
        let Some(slot) = self.lookup(token) else {
            return self.count(ReplyOutcome::Unknown);
        };
        let Some(entry) = self.entries.get(slot as usize) else {
            return self.count(ReplyOutcome::Unknown);
        };
        let mut e = entry.lock();
        if e.token != token {
            return self.count(ReplyOutcome::Unknown);
        }
        match e.state {
            TransferState::InFlight | TransferState::Abandoned => {}
            TransferState::Done(_) | TransferState::Failed(_) => {
                return self.count(ReplyOutcome::Duplicate)
            }
            TransferState::Free => return self.count(ReplyOutcome::Unknown),
        }
        if !check(&e.extra) {
            return self.count(ReplyOutcome::Rejected);
        }
        // The remote gives the buffer back with its reply.
        e.lent = false;
        if e.state == TransferState::Abandoned {
            self.free(&mut e);
            return self.count(ReplyOutcome::Late);
        }
        let Entry {
            buf, extra, state, ..
        } = &mut *e;
        let outcome = match buf.as_ref().map(|b| deliver(b, extra)) {
            Some(Ok(len)) => {
                *state = TransferState::Done(len);
                ReplyOutcome::Completed
            }
            Some(Err(err)) => {
                *state = TransferState::Failed(err);
                ReplyOutcome::Failed
            }
            // Not reached: a live entry always has its buffer.
            None => {
                *state = TransferState::Failed(Error::InvalidArgument);
                ReplyOutcome::Failed
            }
        };
        // Counted before the waker runs, so a woken caller's `stats` already shows it.
        self.count(outcome);
        let waker = e.waker.take();
        drop(e);
        if let Some(w) = waker {
            w.wake();
        }
        outcome
    }

    /// The channel went down (shutdown, remote reset): every transfer in flight fails with
    /// `err` and is woken, every abandoned one is freed, and every loan comes back.
    pub fn fail_all(&self, err: Error) {
        for entry in self.entries.iter() {
            let mut e = entry.lock();
            match e.state {
                TransferState::InFlight => {
                    e.lent = false;
                    e.state = TransferState::Failed(err);
                    let waker = e.waker.take();
                    drop(e);
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
                TransferState::Abandoned => self.free(&mut e),
                TransferState::Free | TransferState::Done(_) | TransferState::Failed(_) => {}
            }
        }
    }

    /// The pool the transfers' buffers come from.
    pub fn pool(&self) -> &MsgPool {
        &self.pool
    }

    /// The transport's counters (for the events the table does not count itself).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters and pool occupancy.
    pub fn stats(&self) -> Stats {
        self.counters
            .snapshot(self.pool.capacity(), self.pool.free_count())
    }

    /// The state of the transfer `t` names; `InvalidArgument` for a stale or foreign ticket.
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

    /// [`crate::Transport::mark_txdone`]: a finished transfer is freed; one still in flight is
    /// abandoned (`timed_out` counted for [`TxOutcome::TimedOut`]) and keeps its buffer and
    /// token until the remote gives them back. `InvalidArgument` for a stale ticket.
    pub fn finish(&self, t: Ticket, outcome: TxOutcome) -> Result<()> {
        self.with(&t, |e| match e.state {
            TransferState::InFlight => {
                if outcome == TxOutcome::TimedOut {
                    Counters::bump(&self.counters.timed_out);
                }
                e.state = TransferState::Abandoned;
                e.waker = None;
            }
            TransferState::Done(_) | TransferState::Failed(_) => self.free(e),
            TransferState::Free | TransferState::Abandoned => {}
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
    fn with<R>(&self, t: &Ticket, f: impl FnOnce(&mut Entry<E>) -> R) -> Result<R> {
        let entry = self
            .entries
            .get(t.slot() as usize)
            .ok_or(Error::InvalidArgument)?;
        let mut e = entry.lock();
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
            .is_some_and(|entry| entry.lock().lent)
    }

    fn lookup(&self, token: u32) -> Option<u32> {
        // Acquire: pairs with the Release in `start`, so the entry is visible.
        let s = self.token_map.get(token as usize)?.load(Ordering::Acquire);
        s.checked_sub(1)
    }

    /// Free an entry: the loan if still out, the token (and its map entry), the buffer, the
    /// waker and the backend's part.
    fn free(&self, e: &mut Entry<E>) {
        e.lent = false;
        if e.state != TransferState::Free {
            // Release: nothing is published, but the store must not be reordered before our
            // last use of the entry.
            self.token_map[e.token as usize].store(0, Ordering::Release);
            if self.tokens.release(Token(e.token)).is_err() {
                log::error!("transfer table: token {} released twice", e.token);
            }
        }
        e.state = TransferState::Free;
        e.buf = None;
        e.waker = None;
        e.extra = E::default();
    }

    fn count(&self, o: ReplyOutcome) -> ReplyOutcome {
        let c = &self.counters;
        Counters::bump(match o {
            ReplyOutcome::Completed => &c.completed,
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
