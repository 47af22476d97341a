//! Atomics shim: `core` normally, `loom` under `--cfg loom`, for the pieces model-checked with
//! the same code that ships (remote events, the recycle queue). [`Word`] lets those algorithms
//! run over region-backed `core` atomics in production and over loom atomics in the models.

pub(crate) use core::sync::atomic::Ordering;

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::AtomicU32;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU32;

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::fence;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;

/// The barriers the shared-memory protocol issues toward the *peer* (docs/protocols/vchiq.md §3),
/// named after Linux's `wmb`/`rmb`/`mb`, which on arm/arm64 are `dsb st`/`dsb ld` (`dsb sy` on
/// arm)/`dsb sy` and so also order accesses for the VideoCore, a bus master outside the ARM's
/// inner-shareable domain. `fence(SeqCst)` is only `dmb ish` on aarch64 and orders nothing for such
/// a master.
///
/// Every call site *also* keeps its Release/Acquire atomics or `fence`s for the language model
/// (what loom checks), except [`Barriers::mb`], which *is* the fence of the Dekker pairs: its
/// implementation must be at least `fence(SeqCst)` for the compiler and the CPU.
pub trait Barriers {
    /// Write barrier: our earlier stores to shared memory are visible to the peer before our
    /// later ones. Issued before each publication the peer reads (tx_pos, `fired`, the recycle
    /// index, the sync msgid, `initialised`).
    fn wmb(&self);
    /// Read barrier: our later reads of shared memory are not satisfied before our earlier ones.
    /// Issued after each read of a peer-written index (tx_pos, `slot_queue_recycle`, the sync
    /// msgid, `initialised`), before the data it covers is read.
    fn rmb(&self);
    /// Full barrier: orders every earlier access before every later one, including stores before
    /// loads (the remote_event Dekker pairs, docs/protocols/vchiq.md §3 barrier 1 and gap (a)), and
    /// completes everything before the doorbell is rung.
    fn mb(&self);
}

/// The hosted/simulated barriers (and those of the loom models): the peer is another thread in
/// the same coherence domain, so the Release/Acquire atomics at every site already give `wmb`/
/// `rmb`'s ordering, and `mb` is `fence(SeqCst)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fences;

impl Barriers for Fences {
    fn wmb(&self) {
        // Nothing: every `wmb` site is followed by a Release store that orders our earlier
        // stores for a peer in our coherence domain.
    }
    fn rmb(&self) {
        // Nothing: every `rmb` site follows an Acquire load that orders our later loads.
    }
    fn mb(&self) {
        // SeqCst fence: the StoreLoad ordering of the Dekker pairs (see `remote_event`).
        fence(Ordering::SeqCst);
    }
}

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
