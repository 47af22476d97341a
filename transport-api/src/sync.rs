//! The atomics and lock shim: `core`/`spin` normally, `loom` under `--cfg loom`, so the lock-free
//! pieces (pool refcounts, lifecycle users, a backend's context table) are model-checked with
//! the same code that ships. Backends use this one shim too, so a `--cfg loom` build swaps every
//! lock and atomic of the stack at once.

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

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
    pub fn lock(&self) -> spin::MutexGuard<'_, T> {
        self.inner.lock()
    }

    /// Lock (a loom model step).
    #[cfg(loom)]
    pub fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.inner.lock().unwrap()
    }
}

/// Hint to the CPU that we are busy-waiting (a no-op yield under loom).
pub fn spin_hint() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
