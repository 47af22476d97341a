//! How a [`TransferTable`](super::TransferTable) locks its entries: each behind its own lock
//! ([`Shared`], the default), or not at all for a table that lives behind the backend's own lock
//! ([`Exclusive`]).

use core::cell::{RefCell, RefMut};
use core::ops::DerefMut;

use crate::sync::{Lock, LockGuard};

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

impl Locking for Shared {
    type Cell<T> = Lock<T>;
    type Guard<'a, T: 'a> = LockGuard<'a, T>;
    fn cell<T>(v: T) -> Lock<T> {
        Lock::new(v)
    }
    fn hold<T>(c: &Lock<T>) -> Self::Guard<'_, T> {
        c.lock()
    }
}

impl Locking for Exclusive {
    type Cell<T> = RefCell<T>;
    type Guard<'a, T: 'a> = RefMut<'a, T>;
    fn cell<T>(v: T) -> RefCell<T> {
        RefCell::new(v)
    }
    fn hold<T>(c: &RefCell<T>) -> RefMut<'_, T> {
        c.borrow_mut()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Shared {}
    impl Sealed for super::Exclusive {}
}
