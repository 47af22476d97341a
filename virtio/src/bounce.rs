//! [`BounceHal`]: a virtio-drivers [`Hal`] for guests that must not hand their private memory to
//! the device: protected VMs (pKVM, Arm CCA realms, confidential guests in general), where the
//! host may only touch memory the guest explicitly shared, and devices that negotiate
//! `VIRTIO_F_ACCESS_PLATFORM`.
//!
//! Every address the device ever sees lies inside one [`BouncePool`]: a region the embedder has
//! shared with the host (with the platform's share call — for example pKVM's `MEM_SHARE`
//! hypercall or the CCA RSI call that makes a range host-accessible — or, on an ordinary VM, a
//! carve-out). The queues come from the pool (`dma_alloc`); every other buffer is *bounced*:
//! `share` copies a driver→device buffer into a pool slot and returns the slot's address,
//! `unshare` copies a device→driver slot back into the caller's buffer and frees the slot. The
//! guest's own memory is never given to the device, and nothing the device writes reaches the
//! driver except through that explicit copy.
//!
//! # The allocator is lock-free
//!
//! `share` and `unshare` run on the interrupt path too (the SCMI transport re-posts event buffers
//! while draining, from `ScmiVirtio::complete`), possibly while the interrupted code on the same
//! CPU is itself inside `share` for another device. A lock there could deadlock, so the pool is a
//! bitmap of 64-byte chunks in `AtomicU64` words, allocated and freed with compare-and-swap and
//! `fetch_and` only:
//!
//! - a buffer of at most 4 KiB takes a run of chunks inside one word (one CAS);
//! - anything larger, and every `dma_alloc`, takes whole words (4 KiB pages, page aligned), one
//!   CAS per word, rolled back if a later word is taken meanwhile.
//!
//! Each allocation scans the bitmap a bounded number of times; an exhausted or too fragmented pool
//! returns physical address 0, which virtio-drivers and the fwipc transports treat as failure
//! (the SCMI transport reports `Busy` for a failed `share`).
//!
//! # Why a type parameter and a static
//!
//! virtio-drivers' `Hal` has no `self`: the pool is reached through [`SharedRegion::pool`], a
//! static the embedder provides once per pool type (see the example). Two pool types give two
//! independent pools; nothing else is global.
//!
//! ```
//! use fwipc_virtio::bounce::{BouncePool, BounceHal, SharedRegion};
//! use std::sync::OnceLock;
//!
//! struct GuestShared;
//! static POOL: OnceLock<BouncePool> = OnceLock::new();
//! impl SharedRegion for GuestShared {
//!     fn pool() -> &'static BouncePool {
//!         POOL.get().expect("bounce pool set up before the first device")
//!     }
//! }
//!
//! // At boot: the region (page aligned) after sharing it with the host; here a leaked heap
//! // block, identity-mapped.
//! let region: &'static mut [u8] = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
//! let base = region.as_mut_ptr().wrapping_add(region.as_ptr().align_offset(4096));
//! // SAFETY: `base` is page aligned, 60 KiB of `region` follow it, nothing else uses them, and
//! // the device addresses them at the same (identity) address.
//! let pool = unsafe { BouncePool::new(base, 60 * 1024, base as u64) }.unwrap();
//! let _ = POOL.set(pool);
//! type Hal = BounceHal<GuestShared>; // e.g. ScmiVirtio::<Hal, _>::new(transport, config)
//! # let _ = core::marker::PhantomData::<Hal>;
//! ```

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use alloc::boxed::Box;
use alloc::vec::Vec;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Bytes per bitmap bit.
const CHUNK: usize = 64;
/// Chunks per bitmap word; one word covers exactly one page.
const WORD_CHUNKS: usize = 64;
const _: () = assert!(CHUNK * WORD_CHUNKS == PAGE_SIZE);
/// Full scans of the bitmap one allocation may make before it reports exhaustion (other CPUs may
/// keep changing the words it looks at).
const SCAN_BUDGET: usize = 4;

/// A region of memory shared with the device, carved into 64-byte chunks. See the module docs.
pub struct BouncePool {
    /// Start of the region in the guest's address space (page aligned).
    virt: usize,
    /// The device's address of `virt`.
    phys: u64,
    /// One bit per chunk, one word per page; a set bit is allocated.
    map: Box<[AtomicU64]>,
    /// Where the next scan starts (spreads concurrent allocations; a hint only).
    cursor: AtomicUsize,
}

impl core::fmt::Debug for BouncePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BouncePool")
            .field("virt", &format_args!("{:#x}", self.virt))
            .field("phys", &format_args!("{:#x}", self.phys))
            .field("pages", &self.map.len())
            .finish()
    }
}

/// Why a region cannot be a [`BouncePool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRegion;

impl core::fmt::Display for BadRegion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("bounce pool region must be page aligned, non-null and at least one page")
    }
}

impl core::error::Error for BadRegion {}

impl BouncePool {
    /// A pool over `len` bytes at `virt` (rounded down to whole pages), which the device reaches
    /// at `phys`.
    ///
    /// # Safety
    ///
    /// `virt..virt + len` is valid for reads and writes for the rest of the program, used by
    /// nothing but this pool, shared with the device at `phys..phys + len`, and `virt` and `phys`
    /// are page aligned.
    pub unsafe fn new(virt: *mut u8, len: usize, phys: u64) -> Result<Self, BadRegion> {
        let pages = len / PAGE_SIZE;
        let v = virt as usize;
        if v == 0
            || pages == 0
            || !v.is_multiple_of(PAGE_SIZE)
            || !phys.is_multiple_of(PAGE_SIZE as u64)
        {
            return Err(BadRegion);
        }
        let map: Vec<AtomicU64> = (0..pages).map(|_| AtomicU64::new(0)).collect();
        Ok(BouncePool {
            virt: v,
            phys,
            map: map.into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        })
    }

    /// The device's view of the pool: its address and length, i.e. the window the host must be
    /// allowed to touch.
    pub fn device_window(&self) -> (PhysAddr, u64) {
        (self.phys, self.capacity() as u64)
    }

    /// Bytes in the pool.
    pub fn capacity(&self) -> usize {
        self.map.len() * PAGE_SIZE
    }

    /// Bytes allocated right now (a snapshot).
    pub fn in_use(&self) -> usize {
        self.map
            .iter()
            // Relaxed: a statistics snapshot.
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize * CHUNK)
            .sum()
    }

    /// Whether `ptr..ptr + len` lies inside the pool.
    pub fn contains(&self, ptr: usize, len: usize) -> bool {
        ptr >= self.virt
            && ptr
                .checked_add(len)
                .is_some_and(|end| end <= self.virt + self.capacity())
    }

    /// The device address of pool address `virt`.
    fn phys_of(&self, virt: usize) -> PhysAddr {
        self.phys + (virt - self.virt) as u64
    }

    /// The pool address of device address `phys`, if it is in the pool.
    fn virt_of(&self, phys: PhysAddr) -> Option<usize> {
        let off = usize::try_from(phys.checked_sub(self.phys)?).ok()?;
        (off < self.capacity()).then(|| self.virt + off)
    }

    /// Allocate `len` bytes: a run of chunks inside one page when `len <= PAGE_SIZE` (unless
    /// `whole_pages`), else whole pages. Returns the pool address.
    fn alloc(&self, len: usize, whole_pages: bool) -> Option<usize> {
        if len == 0 {
            return None;
        }
        if whole_pages || len > PAGE_SIZE {
            return self.alloc_pages(len.div_ceil(PAGE_SIZE));
        }
        let n = len.div_ceil(CHUNK);
        let run = run_mask(n);
        let words = self.map.len();
        // Relaxed: a hint; correctness comes from the CAS on the word itself.
        let start = self.cursor.load(Ordering::Relaxed) % words;
        for k in 0..words * SCAN_BUDGET {
            let w = (start + k) % words;
            let word = &self.map[w];
            // Relaxed: the CAS below validates the value it is based on.
            let mut cur = word.load(Ordering::Relaxed);
            // At most one retry per bit position: other CPUs change the word at most that often
            // before we move on (the outer loop is bounded by SCAN_BUDGET full scans).
            for _ in 0..WORD_CHUNKS {
                let Some(shift) = free_run(cur, n) else { break };
                let mask = run << shift;
                // Acquire on success: the chunks' previous owner freed them with a Release
                // `fetch_and`, so its last writes to them happen before ours.
                match word.compare_exchange_weak(
                    cur,
                    cur | mask,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.cursor.store(w, Ordering::Relaxed);
                        return Some(self.virt + w * PAGE_SIZE + shift * CHUNK);
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Allocate `pages` consecutive whole pages; returns the pool address of the first.
    fn alloc_pages(&self, pages: usize) -> Option<usize> {
        let words = self.map.len();
        if pages == 0 || pages > words {
            return None;
        }
        for _ in 0..SCAN_BUDGET {
            let mut first = 0;
            while first + pages <= words {
                // Claim words first..first+pages one by one; roll back on the first conflict.
                let mut claimed = 0;
                while claimed < pages {
                    // Acquire: as in `alloc`.
                    if self.map[first + claimed]
                        .compare_exchange(0, u64::MAX, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                    {
                        break;
                    }
                    claimed += 1;
                }
                if claimed == pages {
                    return Some(self.virt + first * PAGE_SIZE);
                }
                for w in &self.map[first..first + claimed] {
                    // Release: nothing was written, but keep the one rule for every free.
                    w.store(0, Ordering::Release);
                }
                first += claimed + 1;
            }
        }
        None
    }

    /// Free what `alloc(len, whole_pages)` returned at `virt`.
    fn free(&self, virt: usize, len: usize, whole_pages: bool) {
        if !self.contains(virt, len.max(1)) {
            log::error!("bounce pool: free of {len} bytes at {virt:#x} outside the pool");
            return;
        }
        let off = virt - self.virt;
        if whole_pages || len > PAGE_SIZE {
            let first = off / PAGE_SIZE;
            for w in self.map.iter().skip(first).take(len.div_ceil(PAGE_SIZE)) {
                // Release: our writes to these chunks happen before the next owner's (its
                // allocating CAS is Acquire).
                w.store(0, Ordering::Release);
            }
            return;
        }
        let n = len.div_ceil(CHUNK);
        let run = run_mask(n);
        let (w, shift) = (off / PAGE_SIZE, (off % PAGE_SIZE) / CHUNK);
        // Release: as above.
        self.map[w].fetch_and(!(run << shift), Ordering::Release);
    }
}

/// `n` low bits set (all 64 for `n >= 64`): the bitmap mask of a run of `n` chunks.
fn run_mask(n: usize) -> u64 {
    if n >= WORD_CHUNKS {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// The lowest bit position where `n` consecutive zero bits start in `word`, if any.
fn free_run(word: u64, n: usize) -> Option<usize> {
    let run = run_mask(n);
    (0..=WORD_CHUNKS - n.min(WORD_CHUNKS)).find(|&s| word & (run << s) == 0)
}

/// A [`BouncePool`] over page-aligned memory of its own, placed in a `static`, for guests whose
/// RAM is identity-mapped (the device reaches the region at its virtual address). The pool is
/// created on first use; share the region with the host before that (its address range is
/// [`BouncePool::device_window`] of the pool, or the static's address and `N`).
///
/// ```
/// use fwipc_virtio::bounce::{BounceHal, BouncePool, SharedRegion, StaticPool};
///
/// static SHARED: StaticPool<{ 64 * 1024 }> = StaticPool::new();
/// struct GuestShared;
/// impl SharedRegion for GuestShared {
///     fn pool() -> &'static BouncePool {
///         SHARED.pool()
///     }
/// }
/// type Hal = BounceHal<GuestShared>; // e.g. ScmiVirtio::<Hal, _>::new(transport, config)
/// assert_eq!(GuestShared::pool().capacity(), 64 * 1024);
/// ```
#[repr(C, align(4096))]
pub struct StaticPool<const N: usize> {
    mem: core::cell::UnsafeCell<[u8; N]>,
    pool: spin::Once<BouncePool>,
}

// SAFETY: the memory is only ever reached through the pool (created once, under `spin::Once`),
// whose allocator hands out disjoint chunks with atomic operations.
unsafe impl<const N: usize> Sync for StaticPool<N> {}

impl<const N: usize> StaticPool<N> {
    /// Zeroed memory; `N` must be a non-zero multiple of the page size (checked at compile time).
    #[allow(clippy::new_without_default)] // meant for `static`s: `new` is `const`
    pub const fn new() -> Self {
        const {
            assert!(
                N > 0 && N.is_multiple_of(PAGE_SIZE),
                "StaticPool size: whole pages"
            )
        };
        StaticPool {
            mem: core::cell::UnsafeCell::new([0; N]),
            pool: spin::Once::new(),
        }
    }

    /// The pool over this memory, created on the first call.
    pub fn pool(&'static self) -> &'static BouncePool {
        self.pool.call_once(|| {
            let base = self.mem.get().cast::<u8>();
            // SAFETY: `base` is page aligned (the struct's alignment, the array first) with `N`
            // bytes, a whole number of pages (checked in `new`); they live as long as the static
            // and are used by this pool alone; identity-mapped, so the device address is `base`.
            unsafe { BouncePool::new(base, N, base as u64) }
                .unwrap_or_else(|_| unreachable!("aligned, non-null, whole pages"))
        })
    }
}

/// Names the [`BouncePool`] a [`BounceHal`] uses (virtio-drivers' `Hal` has no `self`).
pub trait SharedRegion: 'static {
    /// The pool. Set up before the first device is initialised.
    fn pool() -> &'static BouncePool;
}

/// A [`Hal`] whose every device address lies in `P`'s [`BouncePool`]. See the module docs.
pub struct BounceHal<P: SharedRegion>(PhantomData<P>);

impl<P: SharedRegion> core::fmt::Debug for BounceHal<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BounceHal")
    }
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned pool memory that no one else owns (the bitmap
// CAS gave it to this caller alone) with the device address the pool was created with, or
// physical address 0 on failure; `dma_dealloc` frees exactly that. `share` returns the address
// of a pool copy (or of the buffer itself when it already lies in the pool) that stays allocated
// until `unshare`, which copies device data back for device-writable directions before freeing
// it. MMIO windows are identity-mapped (documented on `mmio_phys_to_virt`).
unsafe impl<P: SharedRegion> Hal for BounceHal<P> {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let pool = P::pool();
        let Some(len) = pages.checked_mul(PAGE_SIZE) else {
            return (0, NonNull::dangling());
        };
        match pool
            .alloc(len, true)
            .and_then(|v| NonNull::new(v as *mut u8))
        {
            Some(p) => {
                // SAFETY: `len` bytes at `p` are pool memory this call now owns exclusively.
                unsafe { core::ptr::write_bytes(p.as_ptr(), 0, len) };
                (pool.phys_of(p.as_ptr() as usize), p)
            }
            None => {
                log::warn!("bounce pool: no room for {pages} DMA pages");
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        P::pool().free(
            vaddr.as_ptr() as usize,
            pages.saturating_mul(PAGE_SIZE),
            true,
        );
        0
    }

    /// MMIO windows are identity-mapped (device memory is not part of the shared pool).
    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let pool = P::pool();
        let (src, len) = (buffer.cast::<u8>().as_ptr(), buffer.len());
        if pool.contains(src as usize, len) {
            // Already shared memory (e.g. part of a `dma_alloc` region): no copy.
            return pool.phys_of(src as usize);
        }
        let Some(slot) = pool.alloc(len, false) else {
            log::warn!("bounce pool: no room to share {len} bytes");
            return 0;
        };
        let dst = slot as *mut u8;
        if direction == BufferDirection::DeviceToDriver {
            // SAFETY: `len` bytes at `dst` are pool memory this call owns; zeroed so the device
            // never sees a previous user's bytes.
            unsafe { core::ptr::write_bytes(dst, 0, len) };
        } else {
            // SAFETY: the caller guarantees `buffer` is readable for `len` bytes; `dst` is a
            // distinct pool slot of at least `len` bytes (no overlap: the buffer is not in the
            // pool).
            unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
        }
        pool.phys_of(slot)
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let pool = P::pool();
        let (dst, len) = (buffer.cast::<u8>().as_ptr(), buffer.len());
        if pool.contains(dst as usize, len) {
            return; // shared in place
        }
        let Some(slot) = pool.virt_of(paddr) else {
            log::error!("bounce pool: unshare of {paddr:#x}, not a pool address");
            return;
        };
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `slot` is the pool copy `share` made for this buffer (same length); the
            // caller guarantees `buffer` is writable for `len` bytes and the device is done with
            // the slot. Raw copy: no Rust reference to device-writable memory is formed.
            unsafe { core::ptr::copy_nonoverlapping(slot as *const u8, dst, len) };
        }
        pool.free(slot, len, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn region(pages: usize) -> (*mut u8, usize) {
        let v: &'static mut [u8] = Box::leak(vec![0u8; (pages + 1) * PAGE_SIZE].into_boxed_slice());
        let base = v
            .as_mut_ptr()
            .wrapping_add(v.as_ptr().align_offset(PAGE_SIZE));
        (base, pages * PAGE_SIZE)
    }

    fn pool(pages: usize) -> BouncePool {
        let (base, len) = region(pages);
        // SAFETY: a leaked, page-aligned region used by nothing else, identity "device" address.
        unsafe { BouncePool::new(base, len, base as u64 + 0x1000_0000) }.unwrap()
    }

    #[test]
    fn runs_fit_in_a_page_and_come_back() {
        let p = pool(2);
        let a = p.alloc(100, false).unwrap(); // 2 chunks
        let b = p.alloc(64, false).unwrap(); // 1 chunk
        assert_ne!(a, b);
        assert_eq!(p.in_use(), 3 * CHUNK);
        assert_eq!(a % CHUNK, 0);
        p.free(a, 100, false);
        p.free(b, 64, false);
        assert_eq!(p.in_use(), 0);
        // A full page as a run, then pages.
        let c = p.alloc(PAGE_SIZE, false).unwrap();
        let d = p.alloc(PAGE_SIZE, true).unwrap();
        assert_eq!(d % PAGE_SIZE, 0);
        assert!(p.alloc(1, false).is_none(), "both pages taken");
        p.free(c, PAGE_SIZE, false);
        p.free(d, PAGE_SIZE, true);
        assert_eq!(p.in_use(), 0);
        assert!(
            p.alloc(3 * PAGE_SIZE, true).is_none(),
            "larger than the pool"
        );
        assert_eq!(p.alloc(2 * PAGE_SIZE, true), Some(p.virt));
    }

    #[test]
    fn bad_regions_are_refused() {
        let (base, _) = region(1);
        // SAFETY: rejected before use.
        unsafe {
            assert_eq!(BouncePool::new(base, 100, 0).unwrap_err(), BadRegion);
            assert_eq!(
                BouncePool::new(base.wrapping_add(8), PAGE_SIZE, 0).unwrap_err(),
                BadRegion
            );
            assert_eq!(
                BouncePool::new(core::ptr::null_mut(), PAGE_SIZE, 0).unwrap_err(),
                BadRegion
            );
        }
    }

    #[test]
    fn page_claims_roll_back_on_conflict() {
        let p = pool(4);
        let one = p.alloc(10, false).unwrap(); // page 0 partly used
        let two = p.alloc(2 * PAGE_SIZE, true).unwrap(); // pages 1-2
        assert_eq!(two, p.virt + PAGE_SIZE);
        assert!(
            p.alloc(2 * PAGE_SIZE, true).is_none(),
            "only page 3 is whole"
        );
        assert_eq!(
            p.in_use(),
            CHUNK + 2 * PAGE_SIZE,
            "failed claims rolled back"
        );
        p.free(one, 10, false);
        assert_eq!(p.alloc(PAGE_SIZE, true), Some(p.virt));
    }

    #[test]
    fn concurrent_allocations_never_overlap() {
        let p = std::sync::Arc::new(pool(8));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..2000usize {
                        let len = 1 + (i * 37 + t * 11) % 700;
                        if let Some(a) = p.alloc(len, false) {
                            // SAFETY: the run is ours until freed below.
                            unsafe { core::ptr::write_bytes(a as *mut u8, t as u8 + 1, len) };
                            mine.push((a, len));
                        }
                        if mine.len() > 6 {
                            let (a, len) = mine.remove(0);
                            // SAFETY: still ours: nobody else may have written it.
                            let s = unsafe { core::slice::from_raw_parts(a as *const u8, len) };
                            assert!(s.iter().all(|&b| b == t as u8 + 1), "overlap");
                            p.free(a, len, false);
                        }
                    }
                    for (a, len) in mine {
                        p.free(a, len, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(p.in_use(), 0);
    }

    struct TestRegion;
    static POOL: OnceLock<BouncePool> = OnceLock::new();
    impl SharedRegion for TestRegion {
        fn pool() -> &'static BouncePool {
            POOL.get_or_init(|| pool(16))
        }
    }
    type H = BounceHal<TestRegion>;

    #[test]
    fn share_bounces_private_buffers_and_copies_back() {
        let pool = TestRegion::pool();
        let mut msg = *b"request bytes";
        let nn = NonNull::from(&mut msg[..]);
        // SAFETY: `msg` outlives the sharing; the "device" is this test.
        unsafe {
            let pa = H::share(nn, BufferDirection::DriverToDevice);
            let slot = pool.virt_of(pa).expect("device address inside the pool");
            assert!(
                !pool.contains(msg.as_ptr() as usize, msg.len()),
                "private buffer"
            );
            assert_eq!(
                core::slice::from_raw_parts(slot as *const u8, msg.len()),
                b"request bytes"
            );
            H::unshare(pa, nn, BufferDirection::DriverToDevice);

            let mut reply = [0xAAu8; 8];
            let rn = NonNull::from(&mut reply[..]);
            let pr = H::share(rn, BufferDirection::DeviceToDriver);
            let rslot = pool.virt_of(pr).unwrap() as *mut u8;
            assert_eq!(
                *rslot, 0,
                "device-writable slot starts zeroed, not with old bytes"
            );
            core::ptr::copy_nonoverlapping(b"answer!!".as_ptr(), rslot, 8); // the device writes
            assert_eq!(
                reply, [0xAA; 8],
                "nothing reaches the driver before unshare"
            );
            H::unshare(pr, rn, BufferDirection::DeviceToDriver);
            assert_eq!(&reply, b"answer!!");

            let (dpa, dva) = H::dma_alloc(2, BufferDirection::Both);
            assert_eq!(pool.virt_of(dpa), Some(dva.as_ptr() as usize));
            // A buffer inside DMA memory is shared in place.
            let inner = NonNull::slice_from_raw_parts(dva, 32);
            assert_eq!(H::share(inner, BufferDirection::DriverToDevice), dpa);
            H::unshare(dpa, inner, BufferDirection::DriverToDevice);
            assert_eq!(H::dma_dealloc(dpa, dva, 2), 0);
        }
    }
}
