//! Atomics shim: `core` normally, `loom` under `--cfg loom`, for the pieces model-checked with
//! the same code that ships (remote events, the recycle queue). [`Word`] lets those algorithms
//! run over region-backed `core` atomics in production and over loom atomics in the models.

pub(crate) use core::sync::atomic::Ordering;

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::fence;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;

/// A shared 32-bit word (an `AtomicU32` in the region, or a loom atomic in a model).
pub trait Word {
    /// Atomic load.
    fn load(&self, o: Ordering) -> u32;
    /// Atomic store.
    fn store(&self, v: u32, o: Ordering);
}

impl Word for core::sync::atomic::AtomicU32 {
    fn load(&self, o: Ordering) -> u32 {
        core::sync::atomic::AtomicU32::load(self, o)
    }
    fn store(&self, v: u32, o: Ordering) {
        core::sync::atomic::AtomicU32::store(self, v, o)
    }
}

#[cfg(loom)]
impl Word for loom::sync::atomic::AtomicU32 {
    fn load(&self, o: Ordering) -> u32 {
        loom::sync::atomic::AtomicU32::load(self, o)
    }
    fn store(&self, v: u32, o: Ordering) {
        loom::sync::atomic::AtomicU32::store(self, v, o)
    }
}
