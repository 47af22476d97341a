//! The refcounted message pool.
//!
//! Capacity and buffer size are fixed at setup; nothing on the send/receive path allocates.
//! A [`PoolBuf`] is a counted handle: cloning it adds a user, dropping it removes one. The remote
//! side holds references too, as *loans* ([`PoolBuf::lend`] / [`MsgPool::reclaim`]): a buffer the
//! remote still owns is never reused, whatever happened on our side (timeout, cancel, shutdown).
//! A buffer goes back to the free list exactly once, when its last user, local or remote, lets go.
//! Exhaustion is [`Error::Busy`], never a block or an allocation. Every buffer starts on a
//! 128-byte boundary and takes whole 128-byte blocks (`Chunk`), so none shares a cache line with
//! anything else.
//!
//! A buffer handle holds no count on the pool: the pool's memory is freed when its last
//! [`MsgPool`] handle is gone *and* every slot is back on the free list, whichever comes last,
//! decided under the free list's lock (`MsgPool`'s `Drop` and `free_slot`). So looking a buffer
//! up ([`MsgPool::get`]), cloning a handle and dropping one that is not the last each cost one
//! atomic read-modify-write on the slot's count, and a buffer's whole cycle (alloc, free) costs
//! the free list's lock twice and nothing else of the pool: no shared count is touched per
//! buffer (an `Arc` share per slot in use cost two more read-modify-writes per buffer). A
//! consequence: memory the remote holds a loan on stays allocated even after every [`MsgPool`]
//! and [`PoolBuf`] is gone, so a remote that never gives a buffer back (a device whose reset
//! could not be confirmed) can never write into freed memory.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::free_list::FreeList;
use crate::sync::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, CachePadded, Lock, Ordering,
};
use crate::{Error, ProtocolError, Result};

struct Slot {
    /// All users: local handles plus remote loans.
    refs: AtomicU32,
    /// The remote's share of `refs`; a hostile remote cannot return more than it was lent.
    remote: AtomicU32,
    len: AtomicUsize,
    /// The buffer (`buf_size` bytes at the start of a `Box<[Chunk]>` turned raw, freed by
    /// `Drop`). It never moves, so its address is read without the lock ([`PoolBuf::dma_ptr`]);
    /// a slice over it exists only while `lock` is held.
    data: NonNull<[u8]>,
    lock: Lock<()>,
}

// SAFETY: `data` is owned by the slot (boxed chunks) and reached as a slice only under `lock`;
// the other fields are atomics and a lock.
unsafe impl Send for Slot {}
// SAFETY: as above: shared use goes through the atomics, `lock`, or the raw address.
unsafe impl Sync for Slot {}

/// What a buffer is allocated in: it starts on a 128-byte boundary and takes whole 128-byte
/// blocks, so no buffer shares a cache line with anything else. The remote reads and writes a
/// buffer's lines; one that straddled an extra line, or shared one with a neighbour's data or
/// the allocator's bookkeeping, would cost a round trip a line transfer more each way, or on a
/// device without cache-coherent DMA, lose a neighbour's writes to a cache invalidation (128 is
/// the largest cache writeback granule of the Arm cores Linux supports, its arm64
/// `ARCH_DMA_MINALIGN`).
#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct Chunk([u8; CHUNK]);

/// The bytes of a [`Chunk`].
const CHUNK: usize = 128;

impl Slot {
    fn new(buf_size: usize) -> Self {
        let chunks =
            Box::leak(vec![Chunk([0; CHUNK]); buf_size.div_ceil(CHUNK)].into_boxed_slice());
        // The first `buf_size` bytes of the chunks (`buf_size` ≤ their size), with the
        // allocation's provenance.
        let data = NonNull::slice_from_raw_parts(NonNull::from(chunks).cast::<u8>(), buf_size);
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
        let chunks = core::ptr::slice_from_raw_parts_mut(
            self.data.cast::<Chunk>().as_ptr(),
            self.data.len().div_ceil(CHUNK),
        );
        // SAFETY: `data` starts the `Box<[Chunk]>` of `len.div_ceil(CHUNK)` chunks leaked in
        // `Slot::new` (same address and provenance, the same count computed from the same
        // length), freed only here, once.
        drop(unsafe { Box::from_raw(chunks) });
    }
}

struct Inner {
    slots: Box<[Slot]>,
    /// Free slot indices: a slot is pushed only by the one thread that took its count to zero.
    /// On lines of its own (`CachePadded`): every alloc and free writes the lock, and a remote
    /// side that looks buffers up ([`MsgPool::get`]) reads `slots` and `buf_size` on every
    /// request; sharing their line, each caller's alloc took that line from the remote's core
    /// and the remote's next look took it back (docs/benchmarks/changes.md, "The core's written
    /// words off the lines the other side reads").
    free: CachePadded<FreeList>,
    /// [`MsgPool`] handles alive.
    handles: AtomicUsize,
    /// Set by the last [`MsgPool`] handle's drop when slots were still in use: the user that puts
    /// the last one back on the free list frees the pool. Read and written only under the free
    /// list's lock, which orders it (hence Relaxed).
    orphaned: AtomicBool,
    buf_size: usize,
    busy: AtomicU64,
    bad_returns: AtomicU64,
    /// Tests: counts the pool's freeing.
    #[cfg(test)]
    frees: Option<alloc::sync::Arc<core::sync::atomic::AtomicUsize>>,
}

#[cfg(test)]
impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(f) = &self.frees {
            f.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A fixed-capacity pool of equally sized message buffers. Cheap to clone (shared).
pub struct MsgPool {
    /// The pool, from `Box::into_raw`; alive while this handle is (see the module docs).
    inner: NonNull<Inner>,
}

/// `MsgPool`'s and `PoolBuf`'s `Send` and `Sync` rest on this: the build fails if `Inner` loses
/// either.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<Inner>();
};

// SAFETY: a handle is a shared reference to the pool (`Inner` is `Send + Sync`: atomics and
// locks, checked above) that keeps it alive, like an `Arc<Inner>`.
unsafe impl Send for MsgPool {}
// SAFETY: as above; every method takes `&self` and goes through atomics or locks.
unsafe impl Sync for MsgPool {}

impl Clone for MsgPool {
    fn clone(&self) -> Self {
        // Relaxed: a new handle is made from an existing one, which keeps the pool alive; no
        // data is published by the increment (as `Arc::clone`).
        self.pool().handles.fetch_add(1, Ordering::Relaxed);
        MsgPool { inner: self.inner }
    }
}

impl Drop for MsgPool {
    fn drop(&mut self) {
        // Release: our uses of the pool happen-before its freeing (as `Arc`'s drop).
        if self.pool().handles.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: pairs with the other handles' Release decrements.
        fence(Ordering::Acquire);
        let pool = self.pool();
        // Under the free list's lock, as `free_slot`'s check: exactly one of the two sees the
        // pool with no handle and every slot free.
        let unused = {
            let free = pool.free.lock();
            let unused = free.len() == pool.slots.len();
            if !unused {
                // Relaxed: under the lock (see `Inner::orphaned`).
                pool.orphaned.store(true, Ordering::Relaxed);
            }
            unused
            // The lock is released here, in this frame: once it is, `free_slot` on another
            // thread may free the pool (see `FreeList::lock`).
        };
        if unused {
            // SAFETY: no handle is left and every slot is on the free list, so no buffer handle
            // or loan exists either; `inner` came from `Box::into_raw` and is freed only here or
            // in `free_slot`, of which exactly one sees this state (under the lock above).
            unsafe { free_pool(self.inner) };
        }
    }
}

/// Free the pool's memory (its buffers with it).
///
/// # Safety
///
/// `inner` came from `Box::into_raw` in [`MsgPool::new`], and nothing reaches the pool after this.
unsafe fn free_pool(inner: NonNull<Inner>) {
    // SAFETY: the caller's contract.
    drop(unsafe { Box::from_raw(inner.as_ptr()) });
}

impl core::fmt::Debug for MsgPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MsgPool")
            .field("capacity", &self.capacity())
            .field("free", &self.free_count())
            .field("buf_size", &self.pool().buf_size)
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
        let inner = Box::new(Inner {
            slots: slots.into_boxed_slice(),
            free: CachePadded::new(FreeList::new(count as u32)),
            handles: AtomicUsize::new(1),
            orphaned: AtomicBool::new(false),
            buf_size,
            busy: AtomicU64::new(0),
            bad_returns: AtomicU64::new(0),
            #[cfg(test)]
            frees: None,
        });
        // SAFETY: `Box::into_raw` never returns null.
        let inner = unsafe { NonNull::new_unchecked(Box::into_raw(inner)) };
        Ok(MsgPool { inner })
    }

    fn pool(&self) -> &Inner {
        // SAFETY: this handle keeps the pool alive (see `Drop for MsgPool`).
        unsafe { self.inner.as_ref() }
    }

    /// Number of buffers.
    pub fn capacity(&self) -> usize {
        self.pool().slots.len()
    }

    /// Size of each buffer in bytes.
    pub fn buf_size(&self) -> usize {
        self.pool().buf_size
    }

    /// Buffers on the free list right now.
    pub fn free_count(&self) -> usize {
        self.pool().free.len()
    }

    /// How often `alloc` found the pool empty.
    pub fn busy_count(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.pool().busy.load(Ordering::Relaxed)
    }

    /// How often the remote tried to return a buffer it did not hold.
    pub fn bad_return_count(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.pool().bad_returns.load(Ordering::Relaxed)
    }

    /// Take a free buffer (length 0, one user). `Busy` when none is free.
    pub fn alloc(&self) -> Result<PoolBuf> {
        let idx = self.pool().free.pop();
        match idx {
            Some(idx) => {
                let slot = &self.pool().slots[idx as usize];
                // Relaxed: the slot came off the free list under the lock, which already ordered
                // us after the thread that freed it; no one else can see the slot yet.
                slot.refs.store(1, Ordering::Relaxed);
                slot.len.store(0, Ordering::Relaxed);
                Ok(PoolBuf {
                    inner: self.inner,
                    idx,
                })
            }
            None => {
                // Relaxed: statistics counter only.
                self.pool().busy.fetch_add(1, Ordering::Relaxed);
                Err(Error::Busy)
            }
        }
    }

    /// A new handle to buffer `idx` if it is in use (for the receive path, where the remote names
    /// a buffer by index). `None` for a free or out-of-range index.
    pub fn get(&self, idx: u32) -> Option<PoolBuf> {
        let slot = self.pool().slots.get(idx as usize)?;
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
                // The slot was in use, so the pool stays until the new handle, one of its users
                // now, lets go.
                Ok(_) => {
                    return Some(PoolBuf {
                        inner: self.inner,
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
        let Some(slot) = self.pool().slots.get(idx as usize) else {
            // Relaxed: statistics counter only.
            self.pool().bad_returns.fetch_add(1, Ordering::Relaxed);
            return Err(ProtocolError::BadState.into());
        };
        let mut cur = slot.remote.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                // Relaxed: statistics counter only.
                self.pool().bad_returns.fetch_add(1, Ordering::Relaxed);
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
        // SAFETY: `self.inner` is the pool the slot belongs to, kept alive by `self` for the call;
        // the loan given up is one of the slot's users.
        unsafe { release_ref(self.inner, idx) };
        Ok(())
    }

    /// Loans the remote holds on buffer `idx` (0 for a bad index).
    pub fn remote_holds(&self, idx: u32) -> u32 {
        self.pool()
            .slots
            .get(idx as usize)
            .map_or(0, |s| s.remote.load(Ordering::Relaxed))
    }
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

/// The last user of slot `idx` let go: put it on the free list, and free the pool if it was the
/// last slot in use of a pool with no handle left. Out of line, so the inlined common drop (not
/// the last user) stays a decrement.
///
/// # Safety
///
/// The caller took slot `idx`'s count from 1 to 0 in `release_ref`, and `inner` is the pool's
/// pointer (alive: the slot was in use).
#[inline(never)]
unsafe fn free_slot(inner: NonNull<Inner>, idx: u32) {
    // Acquire fence: pairs with the Release decrements of all other users (the Arc pattern);
    // only after it may the buffer be recycled.
    fence(Ordering::Acquire);
    let last = {
        // SAFETY: the slot is not on the free list yet, so the pool is alive (see the module
        // docs); this reference ends with the lock, before the pool may be freed below.
        let pool = unsafe { inner.as_ref() };
        // Under the free list's lock, as the last `MsgPool` handle's check: exactly one of the
        // two sees the pool with no handle and every slot free. Once the lock is released
        // without that, the pool is not touched again here (it may be freed at once).
        let mut free = pool.free.lock();
        free.push(idx);
        // Relaxed: under the lock (see `Inner::orphaned`).
        pool.orphaned.load(Ordering::Relaxed) && free.len() == pool.slots.len()
        // The lock is released here, in this frame (see `FreeList::lock`).
    };
    if last {
        // SAFETY: the last handle is gone (`orphaned`) and this was the last slot in use, so
        // nothing else reaches the pool; `inner` came from `Box::into_raw`.
        unsafe { free_pool(inner) };
    }
}

/// A counted handle to one pool buffer. Clone adds a user; drop removes one.
pub struct PoolBuf {
    /// The pool; alive while the slot has users, this handle being one (see the module docs).
    inner: NonNull<Inner>,
    idx: u32,
}

// SAFETY: a handle is a shared reference to the pool (`Inner` is `Send + Sync`: atomics and
// locks, checked above) kept alive by its slot being in use, like an `Arc<Inner>`.
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

/// A pool whose freeing is counted (unit and loom tests).
#[cfg(test)]
mod test_support {
    use super::MsgPool;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicUsize, Ordering};

    pub(super) fn watched(count: usize, buf_size: usize) -> (MsgPool, Arc<AtomicUsize>) {
        let p = MsgPool::new(count, buf_size).unwrap();
        let frees = Arc::new(AtomicUsize::new(0));
        // SAFETY: the only handle to a new pool, no buffer taken: nothing else reaches it.
        unsafe { (*p.inner.as_ptr()).frees = Some(frees.clone()) };
        (p, frees)
    }

    pub(super) fn frees(f: &AtomicUsize) -> usize {
        // Relaxed: read after the threads that dropped the users were joined.
        f.load(Ordering::Relaxed)
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

    use super::test_support::{frees, watched};

    #[test]
    fn every_buffer_starts_a_line_of_its_own() {
        for size in [1, 100, 128, 129, 268] {
            let p = MsgPool::new(4, size).unwrap();
            let bufs: Vec<PoolBuf> = (0..4).map(|_| p.alloc().unwrap()).collect();
            for b in &bufs {
                assert_eq!(
                    b.dma_ptr() as usize % CHUNK,
                    0,
                    "a {size}-byte buffer off a 128-byte boundary"
                );
                assert_eq!(b.capacity(), size);
                b.with_mut(|d| d.fill(0xa5));
            }
        }
    }

    #[test]
    fn the_free_list_is_alone_on_its_lines() {
        use core::mem::{align_of, offset_of, size_of};
        assert!(align_of::<Inner>() >= 64);
        crate::line_layout::assert_alone(
            "free",
            offset_of!(Inner, free),
            size_of::<FreeList>(),
            &[
                ("slots", offset_of!(Inner, slots), size_of::<Box<[Slot]>>()),
                ("buf_size", offset_of!(Inner, buf_size), size_of::<usize>()),
                (
                    "handles",
                    offset_of!(Inner, handles),
                    size_of::<AtomicUsize>(),
                ),
                ("busy", offset_of!(Inner, busy), size_of::<AtomicU64>()),
            ],
        );
    }

    #[test]
    fn the_pool_is_freed_when_its_last_handle_and_its_last_buffer_are_gone() {
        // Handles last.
        let (p, f) = watched(2, 8);
        let a = p.alloc().unwrap();
        let p2 = p.clone();
        drop(a);
        drop(p);
        assert_eq!(frees(&f), 0, "a handle is left");
        drop(p2);
        assert_eq!(frees(&f), 1, "no handle, every slot free");
        // Buffers last, from several handles of one slot and a second slot.
        let (p, f) = watched(2, 8);
        let a = p.alloc().unwrap();
        a.write(b"abc").unwrap();
        let b = p.get(a.index()).unwrap();
        let c = b.clone();
        let d = p.alloc().unwrap();
        drop(p);
        drop(a);
        drop(b);
        assert_eq!(frees(&f), 0, "two slots in use");
        let mut out = [0u8; 8];
        assert_eq!(
            c.read_into(&mut out),
            3,
            "the buffer outlives the pool handle"
        );
        assert_eq!(&out[..3], b"abc");
        drop(c);
        assert_eq!(frees(&f), 0, "one slot in use");
        drop(d);
        assert_eq!(frees(&f), 1, "the last user freed the pool");
    }

    #[test]
    fn a_loan_keeps_the_pool_memory_alive_until_it_comes_back() {
        let (p, f) = watched(1, 8);
        let a = p.alloc().unwrap();
        let l = a.lend();
        drop(a);
        let p2 = p.clone();
        drop(p);
        p2.reclaim(l).unwrap();
        assert_eq!(p2.free_count(), 1);
        assert_eq!(frees(&f), 0, "a handle is left");
        // A loan outliving every handle: the memory stays until it comes back, which can only
        // be through a handle; without one the remote keeps it for good (never freed under it).
        let b = p2.alloc().unwrap();
        let l = b.lend();
        drop(b);
        let p3 = p2.clone();
        drop(p2);
        assert_eq!(frees(&f), 0);
        p3.reclaim(l).unwrap();
        drop(p3);
        assert_eq!(frees(&f), 1);
    }

    /// The last pool handle and the last buffer handle dropped on two threads at once: the pool
    /// is freed exactly once (Miri, in CI, also checks that neither side touches it after).
    #[test]
    fn last_handle_and_last_buffer_racing_free_the_pool_once() {
        let rounds = if cfg!(miri) { 20 } else { 500 };
        for _ in 0..rounds {
            let (p, f) = watched(2, 8);
            let a = p.alloc().unwrap();
            let b = p.alloc().unwrap();
            a.write(b"x").unwrap();
            let t = std::thread::spawn(move || drop(a));
            let u = std::thread::spawn(move || drop(p));
            drop(b);
            t.join().unwrap();
            u.join().unwrap();
            assert_eq!(frees(&f), 1);
        }
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

    /// The last pool handle dropped on one thread while the last buffer handle is dropped on
    /// another: exactly one of them frees the pool.
    #[test]
    fn last_handle_races_last_buffer() {
        use super::test_support::{frees, watched};
        loom::model(|| {
            let (p, f) = watched(2, 4);
            let a = p.alloc().unwrap();
            let t = loom::thread::spawn(move || drop(a));
            drop(p);
            t.join().unwrap();
            assert_eq!(frees(&f), 1);
        });
    }
}
