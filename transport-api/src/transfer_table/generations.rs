//! A [`TransferTable`] with generations: wire ids made of the entry index and a table-wide
//! generation instead of a token, transfers reserved before they are sent, a reply path that
//! never frees (a late reply marks its entry for [`TransferTable::reap`], which the next ordinary
//! entry runs), sweeps and releases of a subset of the transfers, and the resume of an abandoned
//! one. FastRPC's invoke contexts are such a table (docs/protocols/fastrpc.md §12). The
//! methods that only make sense there are on `TransferTable<_, _, Generations>`; the rest work
//! on any table.

use super::ids::{GenerationIds, Generations};
use super::{
    Entry, EntryPart, IdSource, Locking, ReplyOutcome, StartedTransfer, TransferState,
    TransferTable,
};
use crate::free_list::FreeList;
use crate::sync::{AtomicU64, Ordering};
use crate::transport::Ticket;
use crate::{Error, Result};

/// Most entries a table with generations may have (as many as a [`crate::MsgPool`]).
const MAX_ENTRIES: usize = 1 << 24;

impl<E: EntryPart<Generations>, L: Locking> TransferTable<E, L, Generations> {
    /// `count` transfers named on the wire by their entry index and a generation: one counter
    /// for the whole table, masked with `generation_mask`, so a reply naming another entry (or
    /// an earlier transfer of this one) never matches by accident. A ticket's token is the
    /// generation's upper 32 bits, its generation the lower 32. The entries have no payload
    /// buffer (an index-only free list numbers them, lowest first); `part` makes each entry's
    /// backend part once, and its [`EntryPart::reset`] puts it back in place when the entry is
    /// freed, so storage it holds (scratch sized at setup) is kept. The reply path never frees:
    /// see [`TransferTable::reap`]. `InvalidArgument` for a count of 0 or above 2^24.
    pub fn with_generations(
        count: usize,
        generation_mask: u64,
        part: impl FnMut() -> E,
    ) -> Result<Self> {
        if count == 0 || count > MAX_ENTRIES {
            return Err(Error::InvalidArgument);
        }
        let ids = GenerationIds {
            free: FreeList::new(count as u32),
            capacity: count,
            next: AtomicU64::new(0),
            mask: generation_mask,
        };
        Ok(Self::build(count, ids, part))
    }

    /// A reply naming its transfer by entry index `slot` and `generation`. As
    /// [`TransferTable::on_reply`]: an unknown or stale id is `Unknown`, a second reply
    /// `Duplicate`, `check` refusing it `Rejected`; else the loan comes back and `deliver`
    /// decides (it sees the entry's index). An abandoned transfer keeps the outcome and is
    /// marked for [`TransferTable::reap`] (`Late`): nothing is freed here.
    pub fn on_reply_id(
        &self,
        slot: u32,
        generation: u64,
        check: impl FnOnce(&E) -> bool,
        deliver: impl FnOnce(&u32, &mut E) -> Result<usize>,
    ) -> ReplyOutcome {
        let Some(entry) = self.entries.get(slot as usize) else {
            return self.count(ReplyOutcome::Unknown);
        };
        let e = L::hold(entry);
        let live = !matches!(e.state, TransferState::Free);
        if !live || (u64::from(e.token) << 32 | u64::from(e.generation)) != generation {
            return self.count(ReplyOutcome::Unknown);
        }
        self.reply_to(e, check, deliver)
    }

    /// Finish the frees the reply path deferred (entries abandoned by their caller whose
    /// reply came, or which a sweep failed); returns how many. Cheap when none are pending.
    pub fn reap(&self) -> usize {
        // Relaxed: a hint; an entry marked after this load is found by the next call.
        if self.reap_pending.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut n = 0;
        for entry in self.entries.iter() {
            let mut e = L::hold(entry);
            if e.reap {
                self.free(&mut e);
                n += 1;
            }
        }
        n
    }

    /// Resume an abandoned transfer the backend part `select` picks (a retry of the same call;
    /// `select` may update the part it picks):
    /// one still in flight is in flight again, one whose reply came (or that a sweep failed)
    /// keeps its outcome and is no longer reaped. The caller owns it again, with a new ticket
    /// made of the returned transfer.
    pub fn resume(&self, mut select: impl FnMut(&mut E) -> bool) -> Option<StartedTransfer> {
        for (slot, entry) in self.entries.iter().enumerate() {
            let mut e = L::hold(entry);
            let waiting = e.reap || (matches!(e.state, TransferState::Abandoned) && e.lent);
            if !waiting || !select(&mut e.extra) {
                continue;
            }
            if e.reap {
                e.reap = false;
                // Relaxed: see `free`.
                self.reap_pending.fetch_sub(1, Ordering::Relaxed);
            } else {
                e.state = TransferState::InFlight;
            }
            return Some(StartedTransfer {
                token: crate::token::Token(e.token),
                slot: slot as u32,
                generation: e.generation,
            });
        }
        None
    }
}

impl<E: EntryPart<I>, L: Locking, I: IdSource> TransferTable<E, L, I> {
    /// Reserve an entry for a transfer that is not sent yet (`Busy`, counted in `busy`, when
    /// none is free): `prepare` sets up the backend part in place; its error frees the entry
    /// again and is returned. The entry counts as in flight for [`TransferTable::state`], but
    /// no reply can reach it until [`TransferTable::send_with`]; [`TransferTable::finish`]
    /// frees it.
    pub fn reserve(&self, prepare: impl FnOnce(&mut E) -> Result<()>) -> Result<StartedTransfer> {
        let (slot, buf, token, wide) = self.take_entry()?;
        let mut e = L::hold(&self.entries[slot as usize]);
        // Free: no waker (see `start_with`).
        debug_assert!(e.waker.is_none() && e.buf.is_none());
        e.generation = wide.unwrap_or(e.generation.wrapping_add(1));
        e.state = TransferState::InFlight;
        e.token = token.0;
        e.buf = Some(buf);
        e.lent = false;
        let generation = e.generation;
        if let Err(err) = prepare(&mut e.extra) {
            self.free(&mut e);
            return Err(err);
        }
        // Published while the entry is held (see `start_with`).
        I::publish(&self.ids, token.0, slot);
        drop(e);
        Ok(StartedTransfer {
            token,
            slot,
            generation,
        })
    }

    /// Send a reserved transfer: `f` builds the message from the backend part, under the
    /// entry's lock; on `Ok` the remote holds the entry from then on (it is in flight before
    /// the message can reach the remote, so `f` may not send it: send after this returns), on
    /// `Err` (the backend's own error type `X`) it stays reserved. The outer error is
    /// `InvalidArgument` for a stale ticket or one not reserved.
    pub fn send_with<R, X>(
        &self,
        t: &Ticket,
        f: impl FnOnce(&mut E) -> core::result::Result<R, X>,
    ) -> Result<core::result::Result<R, X>> {
        self.with(t, |e| {
            if !e.reserved() {
                return Err(Error::InvalidArgument);
            }
            let r = f(&mut e.extra);
            if r.is_ok() {
                e.lend();
            }
            Ok(r)
        })?
    }

    /// The message of the transfer `t` never reached the remote after all (the link refused it,
    /// or the remote went away while it was queued and a sweep missed it): if still in flight,
    /// it fails with `err` and the loan is over; `failed` sees the backend part. Returns
    /// whether it failed the transfer. Wakes nobody: the caller is the one sending.
    pub fn fail_sent(&self, t: &Ticket, err: Error, failed: impl FnOnce(&mut E)) -> bool {
        self.with(t, |e| {
            if !matches!(e.state, TransferState::InFlight) || !e.lent {
                return false;
            }
            e.take_back_unsent();
            e.state = TransferState::Failed(err);
            failed(&mut e.extra);
            true
        })
        .unwrap_or(false)
    }

    /// Free every transfer the backend part `select` picks, whoever holds it (a session being
    /// torn down: sweep it with [`TransferTable::reclaim_where`] first), except those reserved
    /// and not sent yet (their starter still builds them). Their tickets go stale. Returns how
    /// many.
    pub fn release_where(&self, mut select: impl FnMut(&E) -> bool) -> usize {
        let mut n = 0;
        for entry in self.entries.iter() {
            let mut e = L::hold(entry);
            if matches!(e.state, TransferState::Free) || e.reserved() || !select(&e.extra) {
                continue;
            }
            self.free(&mut e);
            n += 1;
        }
        n
    }

    /// Transfers kept only because the remote may still use them (abandoned, no reply yet).
    pub fn zombies(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| {
                let e = L::hold(entry);
                matches!(e.state, TransferState::Abandoned) && e.lent
            })
            .count()
    }

    /// Entries not in use right now.
    pub fn free_count(&self) -> usize {
        I::free_count(&self.ids)
    }

    /// Mark `e` (its loan back, its caller gone) for [`TransferTable::reap`] (a table with
    /// generations: the callers check [`IdSource::DEFERRED_FREE`]).
    pub(super) fn mark_reap(&self, e: &mut Entry<E, I>) {
        if !e.reap {
            e.reap = true;
            // Relaxed: see `free`.
            self.reap_pending.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
