//! The atomics and lock shim: `core`/`spin` normally, `loom` under `--cfg loom`, so the lock-free
//! pieces (pool refcounts, lifecycle users, a backend's context table) are model-checked with
//! the same code that ships. Backends use this one shim too, so a `--cfg loom` build swaps every
//! lock and atomic of the stack at once.

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Keeps what it holds on cache lines of its own (128 bytes on x86-64 and AArch64, as
/// adjacent-line prefetchers fetch lines in pairs): for a word one side of a transport writes on
/// every round trip beside words the other side reads, whose every write would otherwise take
/// the other side's line (docs/benchmarks/changes.md, "The core's written words off the lines
/// the other side reads").
pub use crossbeam_utils::CachePadded;

/// A held [`Lock`]: released when dropped.
#[cfg(not(loom))]
pub type LockGuard<'a, T> = spin::MutexGuard<'a, T>;
/// A held [`Lock`]: released when dropped.
#[cfg(loom)]
pub type LockGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// A mutual-exclusion lock: `spin::Mutex` in production (no_std, no OS), `loom::sync::Mutex`
/// under loom.
pub struct Lock<T> {
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

impl<T> Lock<T> {
    /// A new lock holding `v`.
    pub fn new(v: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: spin::Mutex::new(v),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(v),
        }
    }

    /// Lock (spins while another context holds it).
    #[cfg(not(loom))]
    pub fn lock(&self) -> LockGuard<'_, T> {
        self.inner.lock()
    }

    /// Lock (a loom model step).
    #[cfg(loom)]
    pub fn lock(&self) -> LockGuard<'_, T> {
        self.inner.lock().unwrap()
    }
}

/// A cell whose contents two threads reach in turn, ordered by atomics of their own (not a
/// lock): `core::cell::UnsafeCell` normally, `loom::cell::UnsafeCell` under loom, which reports
/// an access the orderings do not separate from another thread's as a data race.
pub struct RaceCell<T> {
    #[cfg(not(loom))]
    inner: core::cell::UnsafeCell<T>,
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
}

impl<T> RaceCell<T> {
    /// A new cell holding `v`.
    pub fn new(v: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: core::cell::UnsafeCell::new(v),
            #[cfg(loom)]
            inner: loom::cell::UnsafeCell::new(v),
        }
    }

    /// Run `f` on a pointer to the value, an access loom tracks as a write. Dereferencing the
    /// pointer is the caller's `unsafe` promise that no other thread reaches the value meanwhile.
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.inner.get());
        #[cfg(loom)]
        return self.inner.with_mut(f);
    }
}

/// Hint to the CPU that we are busy-waiting (a no-op yield under loom).
pub fn spin_hint() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
