//! How a [`TransferTable`](super::TransferTable) locks its entries: each behind its own lock
//! ([`Shared`], the default), or not at all for a table that lives behind the backend's own lock
//! ([`Exclusive`]). A [`Shared`] entry also has a poll word beside its lock, so that
//! [`TransferTable::poll`](super::TransferTable::poll) can see a transfer still in flight
//! without taking the lock (`poll_word.rs`).

use core::cell::{RefCell, RefMut};
use core::ops::DerefMut;

use crate::sync::{AtomicU64, Lock, Ordering};

/// The entry locking of a [`TransferTable`](super::TransferTable): [`Shared`] or [`Exclusive`].
pub trait Locking: sealed::Sealed {
    /// What holds one entry.
    type Cell<T>;
    /// The entry, held.
    type Guard<'a, T: 'a>: DerefMut<Target = T>;
    /// A cell holding `v`.
    fn cell<T>(v: T) -> Self::Cell<T>;
    /// Hold the entry in `c` for the duration of one table operation.
    fn hold<T>(c: &Self::Cell<T>) -> Self::Guard<'_, T>;
    /// Whether the entries have a poll word (only [`Shared`]).
    #[doc(hidden)]
    const POLL_WORD: bool;
    /// Store `word` as the poll word of `c` (its entry is held: only a holder writes it).
    /// Nothing for [`Exclusive`], which has no poll word.
    #[doc(hidden)]
    fn set_word<T>(c: &Self::Cell<T>, word: u64);
    /// Whether the poll word of `c` is `word`, read without holding the entry. Always `false`
    /// for [`Exclusive`] (its `poll` takes the entry: no lock to avoid).
    #[doc(hidden)]
    fn word_is<T>(c: &Self::Cell<T>, word: u64) -> bool;
}

/// Each entry behind the one lock shim ([`crate::sync::Lock`]): the table is `Sync`, and the
/// reply path, the callers and the teardown may run on different CPUs at once.
#[derive(Debug)]
pub enum Shared {}

/// No lock per entry: the table is `Send` but not `Sync`, for a backend that keeps it behind its
/// own lock (one taken anyway on every path, such as a virtio channel lock that also guards the
/// rings), so each table operation costs no atomic read-modify-write of its own. An entry is a
/// `RefCell`: a callback that reached back into the same table while an entry is held would
/// panic instead of aliasing it.
#[derive(Debug)]
pub enum Exclusive {}

/// A [`Shared`] entry: its lock, and beside it the poll word (what the entry's state was when
/// its lock was last let go, as far as `poll` cares: in flight with which generation and token,
/// or not; `poll_word.rs`).
pub struct SharedCell<T> {
    word: AtomicU64,
    lock: Lock<T>,
}

impl Locking for Shared {
    const POLL_WORD: bool = true;
    type Cell<T> = SharedCell<T>;
    #[cfg(not(loom))]
    type Guard<'a, T: 'a> = spin::MutexGuard<'a, T>;
    #[cfg(loom)]
    type Guard<'a, T: 'a> = loom::sync::MutexGuard<'a, T>;
    fn cell<T>(v: T) -> SharedCell<T> {
        SharedCell {
            word: AtomicU64::new(0),
            lock: Lock::new(v),
        }
    }
    #[inline]
    fn hold<T>(c: &SharedCell<T>) -> Self::Guard<'_, T> {
        c.lock.lock()
    }
    #[inline]
    fn set_word<T>(c: &SharedCell<T>, word: u64) {
        // Release, while the entry is still held: a `poll` that reads this value (Acquire)
        // also sees every write of this holder and of the holders before it (the entry set up
        // for the transfer), as taking the lock would have shown it. A `poll` that reads an
        // older value either takes the lock, which decides, or answers "in flight" for a
        // transfer that was in flight when that value was stored.
        c.word.store(word, Ordering::Release);
    }
    #[inline]
    fn word_is<T>(c: &SharedCell<T>, word: u64) -> bool {
        // Acquire: pairs with the Release store in `set_word` (see there).
        c.word.load(Ordering::Acquire) == word
    }
}

impl Locking for Exclusive {
    const POLL_WORD: bool = false;
    type Cell<T> = RefCell<T>;
    type Guard<'a, T: 'a> = RefMut<'a, T>;
    fn cell<T>(v: T) -> RefCell<T> {
        RefCell::new(v)
    }
    fn hold<T>(c: &RefCell<T>) -> RefMut<'_, T> {
        c.borrow_mut()
    }
    #[inline(always)]
    fn set_word<T>(_: &RefCell<T>, _: u64) {}
    #[inline(always)]
    fn word_is<T>(_: &RefCell<T>, _: u64) -> bool {
        false
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Shared {}
    impl Sealed for super::Exclusive {}
}
