//! The refcounted message pool.
//!
//! Capacity and buffer size are fixed at setup; nothing on the send/receive path allocates.
//! A [`PoolBuf`] is a counted handle: cloning it adds a user, dropping it removes one. The remote
//! side holds references too, as *loans* ([`PoolBuf::lend`] / [`MsgPool::reclaim`]): a buffer the
//! remote still owns is never reused, whatever happened on our side (timeout, cancel, shutdown).
//! A buffer goes back to the free list exactly once, when its last user, local or remote, lets go.
//! Exhaustion is [`Error::Busy`], never a block or an allocation.
//!
//! A handle does not hold its own `Arc` on the pool: a slot in use (one or more users) holds one
//! strong count of the pool's `Arc`, taken when the slot is allocated and given back by the user
//! that frees it. So looking a buffer up ([`MsgPool::get`]), cloning a handle and dropping one
//! that is not the last each cost one atomic read-modify-write on the slot's count, not two. A
//! consequence: memory the remote holds a loan on stays allocated even after every [`MsgPool`]
//! and [`PoolBuf`] is gone, so a remote that never gives a buffer back (a device whose reset
//! could not be confirmed) can never write into freed memory.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::sync::{fence, AtomicU32, AtomicU64, AtomicUsize, Lock, Ordering};
use crate::{Error, ProtocolError, Result};

struct Slot {
    /// All users: local handles plus remote loans.
    refs: AtomicU32,
    /// The remote's share of `refs`; a hostile remote cannot return more than it was lent.
    remote: AtomicU32,
    len: AtomicUsize,
    /// The buffer (`buf_size` bytes, a `Box<[u8]>` turned raw, freed by `Drop`). It never moves,
    /// so its address is read without the lock ([`PoolBuf::dma_ptr`]); a slice over it exists
    /// only while `lock` is held.
    data: NonNull<[u8]>,
    lock: Lock<()>,
}

// SAFETY: `data` is owned by the slot (a boxed buffer) and reached as a slice only under `lock`;
// the other fields are atomics and a lock.
unsafe impl Send for Slot {}
// SAFETY: as above: shared use goes through the atomics, `lock`, or the raw address.
unsafe impl Sync for Slot {}

impl Slot {
    fn new(buf_size: usize) -> Self {
        let data = NonNull::from(Box::leak(vec![0u8; buf_size].into_boxed_slice()));
        Slot {
            refs: AtomicU32::new(0),
            remote: AtomicU32::new(0),
            len: AtomicUsize::new(0),
            data,
            lock: Lock::new(()),
        }
    }

    /// Run `f` on the buffer under the slot's lock.
    fn with<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let _held = self.lock.lock();
        // SAFETY: `data` is the live buffer the slot owns (`Slot::new`, freed only in `drop`);
        // the lock makes this the only slice over it; the remote's accesses go through the raw
        // address and byte atomics, never through this slice (`dma_ptr`'s contract).
        f(unsafe { &mut *self.data.as_ptr() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: `data` came from `Box::leak` in `Slot::new` and is freed only here, once.
        drop(unsafe { Box::from_raw(self.data.as_ptr()) });
    }
}

/// A stack of free indices `0..count` behind the lock shim, lowest handed out first: the pool's
/// free list, and the entries of a transfer table with generations, which number their entries
/// with nothing else. Capacity is reserved at setup and never exceeded, as long as an index is
/// pushed back only by the one user that popped it.
pub(crate) struct FreeList(Lock<Vec<u32>>);

impl FreeList {
    /// All of `0..count` free.
    pub(crate) fn new(count: u32) -> Self {
        // Hand out low indices first (popped from the end).
        FreeList(Lock::new((0..count).rev().collect()))
    }

    /// Take a free index (one lock: one atomic read-modify-write).
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        self.0.lock().pop()
    }

    /// Give back an index taken by [`FreeList::pop`]: it is the next one handed out.
    #[inline]
    pub(crate) fn push(&self, idx: u32) {
        self.0.lock().push(idx);
    }

    /// Indices free right now.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().len()
    }
}

struct Inner {
    slots: Box<[Slot]>,
    /// Free slot indices: a slot is pushed only by the one thread that took its count to zero.
    free: FreeList,
    buf_size: usize,
    busy: AtomicU64,
    bad_returns: AtomicU64,
}

/// A fixed-capacity pool of equally sized message buffers. Cheap to clone (shared).
#[derive(Clone)]
pub struct MsgPool {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for MsgPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MsgPool")
            .field("capacity", &self.capacity())
            .field("free", &self.free_count())
            .field("buf_size", &self.inner.buf_size)
            .finish()
    }
}

impl MsgPool {
    /// `count` buffers of `buf_size` bytes each; `InvalidArgument` for zero or more than 2^24.
    pub fn new(count: usize, buf_size: usize) -> Result<Self> {
        if count == 0 || count > (1 << 24) || buf_size == 0 {
            return Err(Error::InvalidArgument);
        }
        let slots: Vec<Slot> = (0..count).map(|_| Slot::new(buf_size)).collect();
        Ok(MsgPool {
            inner: Arc::new(Inner {
                slots: slots.into_boxed_slice(),
                free: FreeList::new(count as u32),
                buf_size,
                busy: AtomicU64::new(0),
                bad_returns: AtomicU64::new(0),
            }),
        })
    }

    /// Number of buffers.
    pub fn capacity(&self) -> usize {
        self.inner.slots.len()
    }

    /// Size of each buffer in bytes.
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Buffers on the free list right now.
    pub fn free_count(&self) -> usize {
        self.inner.free.len()
    }

    /// How often `alloc` found the pool empty.
    pub fn busy_count(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.inner.busy.load(Ordering::Relaxed)
    }

    /// How often the remote tried to return a buffer it did not hold.
    pub fn bad_return_count(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.inner.bad_returns.load(Ordering::Relaxed)
    }

    /// Take a free buffer (length 0, one user). `Busy` when none is free.
    pub fn alloc(&self) -> Result<PoolBuf> {
        let idx = self.inner.free.pop();
        match idx {
            Some(idx) => {
                let slot = &self.inner.slots[idx as usize];
                // Relaxed: the slot came off the free list under the lock, which already ordered
                // us after the thread that freed it; no one else can see the slot yet.
                slot.refs.store(1, Ordering::Relaxed);
                slot.len.store(0, Ordering::Relaxed);
                // The slot's share of the pool (see the module docs), given back by
                // `release_ref` when the last user lets go.
                core::mem::forget(self.inner.clone());
                Ok(PoolBuf {
                    inner: arc_ptr(&self.inner),
                    idx,
                })
            }
            None => {
                // Relaxed: statistics counter only.
                self.inner.busy.fetch_add(1, Ordering::Relaxed);
                Err(Error::Busy)
            }
        }
    }

    /// A new handle to buffer `idx` if it is in use (for the receive path, where the remote names
    /// a buffer by index). `None` for a free or out-of-range index.
    pub fn get(&self, idx: u32) -> Option<PoolBuf> {
        let slot = self.inner.slots.get(idx as usize)?;
        let mut cur = slot.refs.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return None;
            }
            // Acquire on success: pairs with the Release decrement of other users, so we see the
            // buffer contents they wrote. Relaxed on failure: we only retry.
            match slot.refs.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                // The slot was in use, so it holds its share of the pool until the new handle,
                // one of its users now, lets go.
                Ok(_) => {
                    return Some(PoolBuf {
                        inner: arc_ptr(&self.inner),
                        idx,
                    })
                }
                Err(v) => cur = v,
            }
        }
    }

    /// The remote gives back loan `idx`. A return of a buffer the remote does not hold is a
    /// protocol error (counted), never a double free.
    pub fn reclaim(&self, idx: u32) -> Result<()> {
        let Some(slot) = self.inner.slots.get(idx as usize) else {
            // Relaxed: statistics counter only.
            self.inner.bad_returns.fetch_add(1, Ordering::Relaxed);
            return Err(ProtocolError::BadState.into());
        };
        let mut cur = slot.remote.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                // Relaxed: statistics counter only.
                self.inner.bad_returns.fetch_add(1, Ordering::Relaxed);
                return Err(ProtocolError::BadState.into());
            }
            // Relaxed: `remote` only guards against over-return; the buffer's memory ordering is
            // carried by `refs` in `release_ref`.
            match slot.remote.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        // SAFETY: `self.inner` is the pool the slot belongs to, kept alive by `self` for the call.
        unsafe { release_ref(arc_ptr(&self.inner), idx) };
        Ok(())
    }

    /// Loans the remote holds on buffer `idx` (0 for a bad index).
    pub fn remote_holds(&self, idx: u32) -> u32 {
        self.inner
            .slots
            .get(idx as usize)
            .map_or(0, |s| s.remote.load(Ordering::Relaxed))
    }
}

/// The pool's address with the provenance of its whole `Arc` allocation (`Arc::as_ptr`, the
/// pointer `Arc::into_raw` returns), so `release_ref` can rebuild the slot's share from it.
fn arc_ptr(inner: &Arc<Inner>) -> NonNull<Inner> {
    // SAFETY: `Arc::as_ptr` points into a live allocation, never null.
    unsafe { NonNull::new_unchecked(Arc::as_ptr(inner).cast_mut()) }
}

/// Remove one user of slot `idx`; the last one puts the slot on the free list and gives back the
/// slot's share of the pool (which may free the pool: hence a pointer, not a reference).
///
/// # Safety
///
/// `inner` points to a live pool whose slot `idx` has a user the caller gives up (a handle being
/// dropped, or a loan being returned), so the slot's share keeps the pool alive until here.
#[inline]
unsafe fn release_ref(inner: NonNull<Inner>, idx: u32) {
    let last = {
        // SAFETY: the pool is alive (the caller's contract), and this reference ends before the
        // share is given back below.
        let pool = unsafe { inner.as_ref() };
        // Release: every access this user made to the buffer happens-before the decrement, so the
        // thread that frees the slot (and whoever reuses it) sees it finished.
        pool.slots[idx as usize]
            .refs
            .fetch_sub(1, Ordering::Release)
            == 1
    };
    if last {
        // SAFETY: we took the count from 1 to 0 (the caller's contract covers the rest).
        unsafe { free_slot(inner, idx) };
    }
}

/// The last user of slot `idx` let go: put it on the free list and give back its share of the
/// pool. Out of line, so the inlined common drop (not the last user) stays a decrement.
///
/// # Safety
///
/// The caller took slot `idx`'s count from 1 to 0 in `release_ref`.
#[inline(never)]
unsafe fn free_slot(inner: NonNull<Inner>, idx: u32) {
    // Acquire fence: pairs with the Release decrements of all other users (the Arc pattern);
    // only after it may the buffer be recycled.
    fence(Ordering::Acquire);
    // SAFETY: the slot's share, taken in `MsgPool::alloc` (a clone forgotten), is given back
    // exactly once: by the user that took the count from 1 to 0, which is us; `inner` is the
    // `Arc::as_ptr` of that pool (`arc_ptr`), the pointer `Arc::into_raw` would return.
    let pool = unsafe { Arc::from_raw(inner.as_ptr().cast_const()) };
    pool.free.push(idx);
}

/// A counted handle to one pool buffer. Clone adds a user; drop removes one.
pub struct PoolBuf {
    /// The pool; alive while the slot has users, this handle being one (see the module docs).
    inner: NonNull<Inner>,
    idx: u32,
}

/// `PoolBuf`'s `Send` and `Sync` below rest on this: the build fails if `Inner` loses either.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<Inner>();
};

// SAFETY: a handle is a shared reference to the pool (`Inner` is `Send + Sync`: atomics and
// locks, checked above) kept alive by its slot's share of the pool's `Arc`, like an `Arc<Inner>`.
unsafe impl Send for PoolBuf {}
// SAFETY: as above; every method takes `&self` and goes through atomics or the slot's lock.
unsafe impl Sync for PoolBuf {}

impl core::fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolBuf")
            .field("idx", &self.idx)
            .field("len", &self.len())
            .finish()
    }
}

impl Clone for PoolBuf {
    fn clone(&self) -> Self {
        // Relaxed: a new reference is made from an existing one, which keeps the slot alive; no
        // data is published by the increment (same reasoning as `Arc::clone`).
        self.slot().refs.fetch_add(1, Ordering::Relaxed);
        PoolBuf {
            inner: self.inner,
            idx: self.idx,
        }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        // SAFETY: this handle is one of the slot's users, given up here.
        unsafe { release_ref(self.inner, self.idx) };
    }
}

impl PoolBuf {
    fn pool(&self) -> &Inner {
        // SAFETY: this handle is a user of its slot, which keeps the pool alive for as long as the
        // handle (and so the returned borrow) lives.
        unsafe { self.inner.as_ref() }
    }

    fn slot(&self) -> &Slot {
        &self.pool().slots[self.idx as usize]
    }

    /// The buffer's index in its pool (what a backend puts on the wire, never an address).
    pub fn index(&self) -> u32 {
        self.idx
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.pool().buf_size
    }

    /// Bytes of valid data.
    pub fn len(&self) -> usize {
        self.slot().len.load(Ordering::Acquire)
    }

    /// Whether no data is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Users right now (local handles + remote loans).
    pub fn users(&self) -> u32 {
        self.slot().refs.load(Ordering::Relaxed)
    }

    /// Set the valid length; `TooLarge` beyond capacity.
    pub fn set_len(&self, len: usize) -> Result<()> {
        if len > self.pool().buf_size {
            return Err(Error::TooLarge);
        }
        // Release: pairs with the Acquire in `len`, so a reader of the length sees the data.
        self.slot().len.store(len, Ordering::Release);
        Ok(())
    }

    /// Copy `data` in and set the length; `TooLarge` if it does not fit (nothing written).
    pub fn write(&self, data: &[u8]) -> Result<()> {
        if data.len() > self.pool().buf_size {
            return Err(Error::TooLarge);
        }
        self.slot().with(|b| b[..data.len()].copy_from_slice(data));
        self.set_len(data.len())
    }

    /// Copy the valid data out; returns the bytes copied (at most `out.len()`).
    pub fn read_into(&self, out: &mut [u8]) -> usize {
        let n = self.len().min(out.len());
        self.slot().with(|b| out[..n].copy_from_slice(&b[..n]));
        n
    }

    /// Run `f` on the whole buffer (capacity bytes).
    pub fn with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        self.slot().with(|b| f(b))
    }

    /// Run `f` on the whole buffer (capacity bytes), mutably.
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.slot().with(f)
    }

    /// Give the remote a reference (it now co-owns the buffer). Returns the index the remote
    /// will name when it gives the buffer back through [`MsgPool::reclaim`].
    pub fn lend(&self) -> u32 {
        // Relaxed: like `clone`; the remote's view of the data is ordered by the transport's own
        // publication barrier (ring index store), not by this count.
        self.slot().refs.fetch_add(1, Ordering::Relaxed);
        self.slot().remote.fetch_add(1, Ordering::Relaxed);
        self.idx
    }

    /// Base address of the buffer, for DMA sharing (the buffer never moves for the pool's life).
    ///
    /// The pointer may be handed to hardware only while the buffer is lent
    /// ([`PoolBuf::lend`]) and must not be written through while a local user may be reading.
    pub fn dma_ptr(&self) -> *mut u8 {
        // The slot's raw address, without the lock and without a reference to the bytes: a
        // `&mut [u8]` would cover bytes the remote may be writing right now (a data race under
        // Miri: `fwipc-scmi-virtio` `sim::device::tests::hostile_device_rewriting_a_reply_is_no_data_race`).
        self.slot().data.cast::<u8>().as_ptr()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn alloc_until_busy_then_recover() {
        let p = MsgPool::new(3, 16).unwrap();
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        let c = p.alloc().unwrap();
        assert_eq!(p.alloc().err(), Some(Error::Busy));
        assert_eq!(p.busy_count(), 1);
        drop(b);
        let d = p.alloc().unwrap();
        assert_eq!(p.free_count(), 0);
        drop((a, c, d));
        assert_eq!(p.free_count(), 3);
    }

    #[test]
    fn last_user_frees_including_remote_loan() {
        let p = MsgPool::new(2, 8).unwrap();
        let a = p.alloc().unwrap();
        a.write(b"hello").unwrap();
        let loan = a.lend();
        let a2 = a.clone();
        assert_eq!(a.users(), 3);
        drop(a);
        drop(a2);
        // Remote still holds it: not free, not reusable.
        assert_eq!(p.free_count(), 1);
        let again = p.get(loan).unwrap();
        let mut out = [0u8; 8];
        assert_eq!(again.read_into(&mut out), 5);
        assert_eq!(&out[..5], b"hello");
        drop(again);
        p.reclaim(loan).unwrap();
        assert_eq!(p.free_count(), 2);
        assert!(p.get(loan).is_none());
    }

    #[test]
    fn a_slot_in_use_holds_one_share_of_the_pool_whatever_its_handles() {
        let p = MsgPool::new(2, 8).unwrap();
        let weak = Arc::downgrade(&p.inner);
        let a = p.alloc().unwrap();
        a.write(b"abc").unwrap();
        let b = p.get(a.index()).unwrap();
        let c = b.clone();
        assert_eq!(
            weak.strong_count(),
            2,
            "the pool handle and the slot's share"
        );
        drop(p);
        drop(a);
        drop(b);
        assert_eq!(
            weak.strong_count(),
            1,
            "the slot's share outlives the pool handle"
        );
        let mut out = [0u8; 8];
        assert_eq!(c.read_into(&mut out), 3);
        assert_eq!(&out[..3], b"abc");
        drop(c);
        assert_eq!(weak.strong_count(), 0, "the last user gave the pool back");
    }

    #[test]
    fn a_loan_keeps_the_pool_memory_alive_until_it_comes_back() {
        let p = MsgPool::new(1, 8).unwrap();
        let weak = Arc::downgrade(&p.inner);
        let a = p.alloc().unwrap();
        let l = a.lend();
        drop(a);
        let p2 = p.clone();
        drop(p);
        assert_eq!(
            weak.strong_count(),
            2,
            "the pool handle and the lent slot's share"
        );
        p2.reclaim(l).unwrap();
        assert_eq!(weak.strong_count(), 1);
        assert_eq!(p2.free_count(), 1);
    }

    #[test]
    fn hostile_returns_are_errors_not_double_frees() {
        let p = MsgPool::new(2, 8).unwrap();
        let a = p.alloc().unwrap();
        assert!(p.reclaim(a.index()).is_err(), "never lent");
        assert!(p.reclaim(99).is_err(), "out of range");
        let l = a.lend();
        p.reclaim(l).unwrap();
        assert!(p.reclaim(l).is_err(), "returned twice");
        assert_eq!(p.bad_return_count(), 3);
        assert_eq!(a.users(), 1);
        drop(a);
        assert_eq!(p.free_count(), 2);
    }

    /// `dma_ptr` is the buffer itself, the same address from every handle and every call: bytes
    /// written through it are what `read_into` returns, and the other way round.
    #[test]
    fn dma_ptr_is_the_buffer_and_stays_put() {
        let pool = MsgPool::new(2, 16).unwrap();
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        let p = a.dma_ptr();
        assert_eq!(pool.get(a.index()).unwrap().dma_ptr(), p);
        assert_ne!(b.dma_ptr(), p);
        a.write(b"abcdefgh").unwrap();
        let mut seen = [0u8; 8];
        // SAFETY: 8 of the buffer's 16 bytes; nobody else reaches them meanwhile.
        unsafe { crate::shared_mem::copy_from_shared(p, &mut seen) };
        assert_eq!(&seen, b"abcdefgh");
        // SAFETY: as above, for writes.
        unsafe { crate::shared_mem::copy_to_shared(p.wrapping_add(2), b"XY") };
        let mut out = [0u8; 8];
        assert_eq!(a.read_into(&mut out), 8);
        assert_eq!(&out, b"abXYefgh");
        assert_eq!(a.dma_ptr(), p, "the buffer never moves");
    }

    #[test]
    fn write_too_large_is_rejected() {
        let p = MsgPool::new(1, 4).unwrap();
        let a = p.alloc().unwrap();
        assert_eq!(a.write(b"12345"), Err(Error::TooLarge));
        assert_eq!(a.len(), 0);
        assert_eq!(a.set_len(5), Err(Error::TooLarge));
    }

    #[test]
    fn concurrent_clone_drop_frees_exactly_once() {
        let p = MsgPool::new(4, 8).unwrap();
        for _ in 0..200 {
            let a = p.alloc().unwrap();
            let l = a.lend();
            let hs: Vec<_> = (0..3).map(|_| a.clone()).collect();
            drop(a);
            let p2 = p.clone();
            let ts: Vec<_> = hs
                .into_iter()
                .map(|h| std::thread::spawn(move || drop(h)))
                .chain(core::iter::once(std::thread::spawn(move || {
                    p2.reclaim(l).unwrap()
                })))
                .collect();
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(p.free_count(), 4);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// A local handle dropped on one thread while the remote returns its loan on another: the
    /// slot is freed exactly once and the writer's data is visible to the freer.
    #[test]
    fn drop_races_reclaim() {
        loom::model(|| {
            let p = MsgPool::new(1, 4).unwrap();
            let a = p.alloc().unwrap();
            let l = a.lend();
            let p2 = p.clone();
            let t = loom::thread::spawn(move || p2.reclaim(l).unwrap());
            a.write(b"ab").unwrap();
            drop(a);
            t.join().unwrap();
            assert_eq!(p.free_count(), 1);
            assert!(p.alloc().is_ok());
        });
    }
}
