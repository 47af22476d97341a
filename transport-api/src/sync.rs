//! The atomics and lock shim: `core`/`spin` normally, `loom` under `--cfg loom`, so the lock-free
//! pieces (pool refcounts, lifecycle users) are model-checked with the same code that ships.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// A mutual-exclusion lock: `spin::Mutex` in production (no_std, no OS), `loom::sync::Mutex`
/// under loom.
pub(crate) struct Lock<T> {
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

impl<T> Lock<T> {
    pub(crate) fn new(v: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: spin::Mutex::new(v),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(v),
        }
    }

    #[cfg(not(loom))]
    pub(crate) fn lock(&self) -> spin::MutexGuard<'_, T> {
        self.inner.lock()
    }

    #[cfg(loom)]
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.inner.lock().unwrap()
    }
}

/// Hint to the CPU that we are busy-waiting (a no-op yield under loom).
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
