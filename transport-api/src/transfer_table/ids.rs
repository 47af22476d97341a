//! Where a [`TransferTable`](super::TransferTable)'s wire ids come from, chosen at compile time:
//! [`Tokens`] (a [`TokenAllocator`] token per transfer, the entries numbered by the buffers of a
//! [`MsgPool`]) or [`Generations`] (the entry index and one table-wide generation, the entries
//! numbered by an index-only free list, the reply path never freeing). The table's transitions
//! are written once; an id source supplies only what differs, so a token table compiles without
//! the generation branches and the deferred-free checks. And [`EntryPart`]: how a freed entry's
//! backend part goes back to idle.

use crate::free_list::FreeList;
use crate::pool::{MsgPool, PoolBuf};
use crate::sync::{AtomicU64, Ordering};
use crate::token::{Token, TokenAllocator};
use crate::Result;

/// The id source of a [`TransferTable`](super::TransferTable): [`Tokens`] or [`Generations`].
pub trait IdSource: sealed::Sealed + Sized {
    /// What a live entry holds, handed to the table's callbacks: its [`PoolBuf`] ([`Tokens`]),
    /// or its index ([`Generations`]: the entries have no buffer; the payload is the
    /// backend's).
    type Buf;
    /// The table-wide part: the pool, the tokens and the token → entry map, or the free list
    /// and the generation counter.
    #[doc(hidden)]
    type Ids;
    /// Whether the reply path leaves freeing to
    /// [`TransferTable::reap`](super::TransferTable::reap) (a transfer abandoned by its caller
    /// keeps its outcome until then).
    #[doc(hidden)]
    const DEFERRED_FREE: bool;
    /// Take a free entry: its index and what it holds. `Busy` when none is free.
    #[doc(hidden)]
    fn take(ids: &Self::Ids) -> Result<(u32, Self::Buf)>;
    /// Give back what [`IdSource::take`] gave (the entry is free again).
    #[doc(hidden)]
    fn put_back(ids: &Self::Ids, buf: Self::Buf);
    /// The next wire id: the token, and the entry's generation (`None`: the entry's own count
    /// of transfers goes on). `Busy` when none is free.
    #[doc(hidden)]
    fn next_id(ids: &Self::Ids) -> Result<(Token, Option<u32>)>;
    /// Make the transfer on entry `slot` findable by `token` (after the entry is written).
    #[doc(hidden)]
    fn publish(ids: &Self::Ids, token: u32, slot: u32);
    /// Give back the id `token` (the transfer is over, or never went out).
    #[doc(hidden)]
    fn release_id(ids: &Self::Ids, token: u32);
    /// Number of entries.
    #[doc(hidden)]
    fn capacity(ids: &Self::Ids) -> usize;
    /// Entries free right now.
    #[doc(hidden)]
    fn free_count(ids: &Self::Ids) -> usize;
    /// Tokens reserved right now (0 for [`Generations`]).
    #[doc(hidden)]
    fn tokens_in_use(ids: &Self::Ids) -> u32;
}

/// Wire ids from a [`TokenAllocator`]: a token per transfer, quarantined until the remote gives
/// the buffer back, found by the reply path through the entry published with it; each entry
/// numbered by a [`MsgPool`] buffer that holds the message (made by
/// [`TransferTable::new`](super::TransferTable::new)).
#[derive(Debug)]
pub enum Tokens {}

/// Wire ids made of the entry index and one table-wide generation; entries numbered by an
/// index-only free list (no buffer); the reply path never frees (made by
/// [`TransferTable::with_generations`](super::TransferTable::with_generations)).
#[derive(Debug)]
pub enum Generations {}

/// A token table's ids: the pool whose buffers number the entries, and the tokens, each with
/// the entry it names published ([`TokenAllocator::publish`]: the token → entry map).
pub struct TokenIds {
    pub(super) pool: MsgPool,
    pub(super) tokens: TokenAllocator,
}

/// A generation table's ids: the free entries, the next generation and its mask.
pub struct GenerationIds {
    pub(super) free: FreeList,
    pub(super) capacity: usize,
    pub(super) next: AtomicU64,
    pub(super) mask: u64,
}

impl IdSource for Tokens {
    type Buf = PoolBuf;
    type Ids = TokenIds;
    const DEFERRED_FREE: bool = false;

    #[inline]
    fn take(ids: &TokenIds) -> Result<(u32, PoolBuf)> {
        let buf = ids.pool.alloc()?;
        Ok((buf.index(), buf))
    }

    #[inline]
    fn put_back(_: &TokenIds, buf: PoolBuf) {
        // The last user of the buffer lets go: it is back in the pool.
        drop(buf);
    }

    #[inline]
    fn next_id(ids: &TokenIds) -> Result<(Token, Option<u32>)> {
        ids.tokens.alloc().map(|t| (t, None))
    }

    #[inline]
    fn publish(ids: &TokenIds, token: u32, slot: u32) {
        // A Release store: the entry (written under its lock before) is complete before a reply
        // handler can find it through the token.
        ids.tokens.publish(Token(token), slot);
    }

    #[inline]
    fn release_id(ids: &TokenIds, token: u32) {
        // The entry it named goes with it (a Release store, after our last use of the entry).
        if ids.tokens.release(Token(token)).is_err() {
            log::error!("transfer table: token {token} released twice");
        }
    }

    fn capacity(ids: &TokenIds) -> usize {
        ids.pool.capacity()
    }

    fn free_count(ids: &TokenIds) -> usize {
        ids.pool.free_count()
    }

    fn tokens_in_use(ids: &TokenIds) -> u32 {
        ids.tokens.in_use()
    }
}

impl IdSource for Generations {
    type Buf = u32;
    type Ids = GenerationIds;
    const DEFERRED_FREE: bool = true;

    #[inline]
    fn take(ids: &GenerationIds) -> Result<(u32, u32)> {
        let slot = ids.free.pop().ok_or(crate::Error::Busy)?;
        Ok((slot, slot))
    }

    #[inline]
    fn put_back(ids: &GenerationIds, slot: u32) {
        ids.free.push(slot);
    }

    #[inline]
    fn next_id(ids: &GenerationIds) -> Result<(Token, Option<u32>)> {
        // Relaxed: uniqueness only; the value is published under the entry's lock.
        let g = ids.next.fetch_add(1, Ordering::Relaxed) & ids.mask;
        Ok((Token((g >> 32) as u32), Some(g as u32)))
    }

    #[inline]
    fn publish(_: &GenerationIds, _: u32, _: u32) {}

    #[inline]
    fn release_id(_: &GenerationIds, _: u32) {}

    fn capacity(ids: &GenerationIds) -> usize {
        ids.capacity
    }

    fn free_count(ids: &GenerationIds) -> usize {
        ids.free.len()
    }

    fn tokens_in_use(_: &GenerationIds) -> u32 {
        0
    }
}

/// A table entry's backend part `E` (the endpoint a reply must come from, a bulk buffer, an
/// invoke context...) as the table puts it back to idle when it frees the entry: for a
/// [`Tokens`] table any `E: Default` (the default value), for a [`Generations`] table the
/// backend's own reset in place, which keeps storage sized at setup.
pub trait EntryPart<I: IdSource> {
    /// Back to idle (the entry was freed).
    fn reset(&mut self);
}

impl<E: Default> EntryPart<Tokens> for E {
    #[inline]
    fn reset(&mut self) {
        *self = E::default();
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Tokens {}
    impl Sealed for super::Generations {}
}
