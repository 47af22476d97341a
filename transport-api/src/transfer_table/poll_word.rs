//! The poll word of a [`Shared`](super::Shared) entry: what [`TransferTable::poll`] needs to
//! know without taking the entry's lock — whether the entry holds, in flight, the transfer with
//! a given generation and token.
//!
//! The word is `generation << 32 | token << 1 | 1` while the entry is in flight (sent or
//! reserved, not reaped) and 0 otherwise; a token wider than 31 bits is never published (0:
//! such a transfer is polled under its lock). Every entry is held through [`Held`], and every
//! state change goes through [`Held::set_state`], which stores the word with the state while
//! the entry is held; debug builds check, each time an entry is let go, that the word is what
//! the entry says, so the table's tests catch a transition that bypassed it. (A reaped entry is
//! never in flight: it is marked with its outcome, so the mark needs no store.) `poll` compares
//! the word with the one its ticket would have: equal means the entry held
//! exactly that transfer in flight when its lock was last let go, which is what the locked
//! check ([`Entry::matches`] and the state) would have found then; anything else (done,
//! failed, abandoned, reaped, free, another generation or token) takes the lock and decides as
//! before. The whole generation and token are compared, not a hash or their low bits, so a
//! ticket of an earlier transfer on a reused entry (ABA) matches no sooner than it would under
//! the lock: only once the 32-bit generation has wrapped back to it with the same token, as
//! [`Entry::matches`] allows too.
//!
//! [`TransferTable::poll`]: super::TransferTable::poll

use core::ops::{Deref, DerefMut};

use super::{Entry, IdSource, Locking, TransferState, TransferTable};
use crate::transport::Ticket;

/// Token bits the word holds (bit 0 is the in-flight flag, the upper 32 the generation).
const TOKEN_BITS: u32 = 31;

/// The poll word of a transfer in flight with `generation` and `token`; 0 (no live word) for a
/// token wider than [`TOKEN_BITS`].
#[inline]
pub(super) const fn in_flight(generation: u32, token: u32) -> u64 {
    if token >> TOKEN_BITS != 0 {
        return 0;
    }
    ((generation as u64) << 32) | ((token as u64) << 1) | 1
}

impl<E, I: IdSource> Entry<E, I> {
    /// This entry's poll word (see the module).
    #[inline]
    pub(super) fn poll_word(&self) -> u64 {
        if matches!(self.state, TransferState::InFlight) && !self.reaped() {
            in_flight(self.generation, self.token)
        } else {
            0
        }
    }
}

/// An entry held for one table operation. Its state changes through [`Held::set_state`],
/// which stores the poll word with it; letting go checks, in debug builds, that the word is
/// what the entry says (none of this for [`Exclusive`](super::Exclusive) tables).
pub(super) struct Held<'a, E: 'a, L: Locking, I: IdSource + 'a> {
    cell: &'a L::Cell<Entry<E, I>>,
    guard: L::Guard<'a, Entry<E, I>>,
}

impl<'a, E: 'a, L: Locking, I: IdSource + 'a> Held<'a, E, L, I> {
    /// Hold the entry in `cell`.
    #[inline]
    pub(super) fn new(cell: &'a L::Cell<Entry<E, I>>) -> Self {
        Held {
            cell,
            guard: L::hold(cell),
        }
    }

    /// Move the entry to `state`, and its poll word with it (a transfer going in flight: set
    /// its generation and token first).
    #[inline]
    pub(super) fn set_state(&mut self, state: TransferState) {
        self.guard.state = state;
        let word = match state {
            TransferState::InFlight => in_flight(self.guard.generation, self.guard.token),
            _ => 0,
        };
        L::set_word(self.cell, word);
    }
}

impl<'a, E: 'a, L: Locking, I: IdSource + 'a> Deref for Held<'a, E, L, I> {
    type Target = Entry<E, I>;
    #[inline]
    fn deref(&self) -> &Entry<E, I> {
        &self.guard
    }
}

impl<'a, E: 'a, L: Locking, I: IdSource + 'a> DerefMut for Held<'a, E, L, I> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Entry<E, I> {
        &mut self.guard
    }
}

#[cfg(debug_assertions)]
impl<'a, E: 'a, L: Locking, I: IdSource + 'a> Drop for Held<'a, E, L, I> {
    fn drop(&mut self) {
        // Still held: no other holder can have changed the word since this one's last store.
        debug_assert!(
            !L::POLL_WORD || L::word_is(self.cell, self.guard.poll_word()),
            "an entry let go with a stale poll word (a state change not made by `set_state`)"
        );
    }
}

impl<E, L: Locking, I: IdSource> TransferTable<E, L, I> {
    /// Whether the poll word of the entry `t` names says `t` is in flight (`poll`'s answer
    /// without the entry's lock; never for a table without poll words).
    #[inline]
    pub(super) fn in_flight_unlocked(&self, t: &Ticket) -> bool {
        let word = in_flight(t.generation(), t.token());
        L::POLL_WORD
            && word != 0
            && self
                .entries
                .get(t.slot() as usize)
                .is_some_and(|c| L::word_is(c, word))
    }

    /// Whether every entry's poll word is what its entry says (always, without a poll word).
    #[cfg(all(test, not(loom)))]
    pub(super) fn words_mirror_entries(&self) -> bool {
        !L::POLL_WORD
            || self.entries.iter().all(|c| {
                let w = L::hold(c).poll_word();
                L::word_is(c, w)
            })
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
