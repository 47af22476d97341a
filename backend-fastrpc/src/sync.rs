//! The lock/atomics shim: `spin` and `core` normally, `loom` under `--cfg loom`, so the context
//! lifetime protocol is model-checked with the code that ships
//! (`RUSTFLAGS="--cfg loom" cargo test -p fwipc-fastrpc --release --lib loom`).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// A mutual-exclusion lock (`spin::Mutex`, or `loom::sync::Mutex` under loom).
pub struct Mutex<T> {
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

impl<T> Mutex<T> {
    /// A new lock.
    pub fn new(v: T) -> Self {
        Mutex {
            #[cfg(not(loom))]
            inner: spin::Mutex::new(v),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(v),
        }
    }

    /// Lock.
    #[cfg(not(loom))]
    pub fn lock(&self) -> spin::MutexGuard<'_, T> {
        self.inner.lock()
    }

    /// Lock.
    #[cfg(loom)]
    pub fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.inner.lock().unwrap()
    }
}
