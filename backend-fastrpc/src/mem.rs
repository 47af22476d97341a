//! Memory the DSP can reach: the HAL the embedder implements (allocate page-aligned, zeroed,
//! DSP-reachable memory on a session's context bank) and the shared-buffer handle (the dma-buf
//! role: memory handed to the DSP by handle instead of being copied).
//!
//! A region stays mapped for the DSP exactly as long as some `Arc` to it lives: the context of an
//! invoke that passed it holds one, so a timed-out call keeps the mapping until the DSP answers
//! or the session is torn down. Dropping the last reference unmaps (the HAL's `Drop`).
//!
//! # The shared-memory rule: no references, copy in and out
//!
//! The DSP is another agent that can write a region at any time: legitimately while it owns the
//! call, and *also* late (after the AP gave up) or out of spite (a hostile or broken DSP). A Rust
//! `&[u8]` or `&mut [u8]` over such memory asserts that nobody else writes it for the
//! reference's lifetime; a concurrent DSP write would be undefined behaviour, and the compiler
//! may legally re-read or cache such a slice (a double fetch: a length checked once and used
//! from a second, different read). So **no `&[u8]` / `&mut [u8]` (no reference to plain bytes)
//! of region memory ever exists**:
//!
//! - a region exposes only a raw base pointer ([`DmaRegion::as_ptr`]);
//! - every access goes through [`read_at`] / [`write_at`] / `fill_at` (bounds-checked with
//!   `checked_add`, `InvalidArgument` when out of range), which copy between the region and
//!   private AP memory with the one shared-memory accessor of every backend,
//!   `fwipc_transport_api::shared_mem` (`copy_from_shared` / `copy_to_shared` / `fill_shared`):
//!   byte-wise atomic copies made from the raw pointer, each native word wholly inside the range
//!   one **Relaxed `AtomicUsize`** load/store and the edge bytes **Relaxed `AtomicU8`** (the only
//!   references are the transient `&AtomicUsize` / `&AtomicU8` of `from_ptr`, shared references
//!   to an `UnsafeCell`, which by definition may be written concurrently);
//! - parsers (metadata, lengths, fd lists) only ever run over the private copy, so each remote
//!   value is read exactly once and checked where it is used.
//!
//! Why atomic copies and not `ptr::copy_nonoverlapping` or `read_volatile`: both of those are
//! *non-atomic* accesses in the language model, so with the simulated DSP (a Rust thread using
//! the same memory) they would still race. A Relaxed atomic access never races with another
//! atomic access of the same size, whatever thread or agent makes it; the DSP side is modelled
//! as such an agent (on hardware an aligned word or byte access is single-copy atomic for each
//! of its bytes; the simulator's DSP uses these same accessors), so a concurrent DSP write
//! yields *some* value for each byte (every `u8` is valid), never UB. Racing atomics of
//! different sizes on the same bytes are not allowed in the language model, so the simulator's
//! DSP copies with `shared_mem` too, and two sides that can race on a word cover it the same
//! way (`shared_mem`'s module documentation: the same range ends, or ends that differ only at
//! word boundaries; regions are page-aligned). On aarch64 the copies are plain `ldr`/`str`
//! inside and `ldrb`/`strb` at the edges, the instructions volatile accesses would be; no
//! barrier is added.
//! Relaxed is enough because these accessors carry no ordering duty: publication of the bytes to
//! and from the DSP is ordered by the [`crate::PacketChannel`] contract (`send` releases,
//! receipt acquires) and, for non-coherent memory, by the region's
//! [`DmaRegion::sync_for_device`] / [`DmaRegion::sync_for_cpu`] hooks.
//!
//! Cost: one pass over the bytes copied (the layout engine builds a call's metadata in a private
//! shadow buffer preallocated with the payload pool, then [`write_at`] copies it and the
//! in-buffers in; docs/protocols/fastrpc.md §12.9 says which bytes), nothing allocated.

use alloc::sync::Arc;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU8;

use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};

use crate::error::{FastRpcError, Result};

/// One DSP-reachable memory region, page-aligned in both address spaces.
///
/// # Safety
///
/// Implementors promise that [`as_ptr`](DmaRegion::as_ptr) returns a pointer valid for reads and
/// writes of [`len`](DmaRegion::len) bytes for as long as the region object lives, that `len`
/// never changes, and that the AP side of that memory is accessed *only* through
/// `fwipc_transport_api::shared_mem`'s byte-wise atomic copies (this module's accessors; any
/// in-process agent standing for the DSP uses them too): the implementation itself never
/// creates a `&[u8]` / `&mut [u8]` over it, never reads or writes it non-atomically while the
/// region is shared, and never makes a racing atomic access of another size to its bytes.
/// The pointed-to bytes may change at any time (the DSP writes them).
pub unsafe trait DmaRegion: Send + Sync {
    /// Bus address (IOVA on the session's context bank, below 2^32) of byte 0.
    fn iova(&self) -> u64;
    /// AP virtual address of byte 0 (what `pv` fields are computed from).
    fn va(&self) -> u64;
    /// Size in bytes (a page multiple).
    fn len(&self) -> usize;
    /// Whether the region is empty (never, for a real allocation).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// AP mapping of byte 0. The crate only ever dereferences it through its bounds-checked
    /// byte-wise atomic accessors, never turning it into a slice.
    fn as_ptr(&self) -> NonNull<u8>;
    /// Called after the AP wrote `[off, off+len)` and before the DSP may read it (clean the
    /// data cache for a non-coherent mapping). A coherent mapping needs nothing: the default.
    fn sync_for_device(&self, off: usize, len: usize) {
        let _ = (off, len);
    }
    /// Called before the AP reads `[off, off+len)` written by the DSP (invalidate the data
    /// cache for a non-coherent mapping). A coherent mapping needs nothing: the default.
    fn sync_for_cpu(&self, off: usize, len: usize) {
        let _ = (off, len);
    }
}

/// `[off, off + n)` inside a region of `len` bytes.
fn in_bounds(len: usize, off: usize, n: usize) -> Result<()> {
    match off.checked_add(n) {
        Some(end) if end <= len => Ok(()),
        _ => Err(FastRpcError::InvalidArgument),
    }
}

/// Copy `out.len()` bytes at `off` out of the region; `InvalidArgument` if out of range (nothing
/// is read then). The bytes may be changing under a misbehaving DSP: `out` then holds some mix
/// of old and new byte values, which the caller parses as untrusted input.
pub(crate) fn read_at(r: &dyn DmaRegion, off: usize, out: &mut [u8]) -> Result<()> {
    in_bounds(r.len(), off, out.len())?;
    r.sync_for_cpu(off, out.len());
    // SAFETY: `[off, off + out.len())` is inside the region (checked above), which the
    // `DmaRegion` contract keeps valid while `r` lives and reaches only through `shared_mem`'s
    // copies, ours and the (simulated or real) DSP's: the accessor's contract. Ordering against
    // the DSP comes from the packet channel contract (module documentation).
    unsafe { copy_from_shared(r.as_ptr().as_ptr().wrapping_add(off), out) };
    Ok(())
}

/// Copy `data` into the region at `off`; `InvalidArgument` if out of range (nothing is written
/// then).
pub(crate) fn write_at(r: &dyn DmaRegion, off: usize, data: &[u8]) -> Result<()> {
    in_bounds(r.len(), off, data.len())?;
    // SAFETY: as in `read_at`, for writes; publication to the DSP is the packet channel's `send`
    // (a release) after it.
    unsafe { copy_to_shared(r.as_ptr().as_ptr().wrapping_add(off), data) };
    r.sync_for_device(off, data.len());
    Ok(())
}

/// Set `n` bytes at `off` to `v`; `InvalidArgument` if out of range.
#[cfg(all(test, feature = "sim"))]
pub fn fill_at(r: &dyn DmaRegion, off: usize, n: usize, v: u8) -> Result<()> {
    in_bounds(r.len(), off, n)?;
    // SAFETY: as in `write_at`.
    unsafe {
        fwipc_transport_api::shared_mem::fill_shared(r.as_ptr().as_ptr().wrapping_add(off), n, v)
    };
    r.sync_for_device(off, n);
    Ok(())
}

/// Zeroed region backing memory a HAL (or the simulator) can own: `len` atomic bytes, so the
/// owner never holds a plain-`u8` view of memory it shares (`shared_mem`'s word accesses reach
/// them through raw pointers; the memory's type does not matter to them, its address does).
pub fn zeroed_atomic_bytes(len: usize) -> alloc::boxed::Box<[AtomicU8]> {
    (0..len).map(|_| AtomicU8::new(0)).collect()
}

/// The platform: DMA allocation per session (context bank) with its stream id.
pub trait DmaHal: Send + Sync {
    /// Allocate `size` bytes (rounded up to a page), zeroed, mapped on context bank `sid`.
    /// Only called at setup / control paths, never on the steady-state invoke path.
    fn alloc(&self, sid: u32, size: usize) -> Option<Arc<dyn DmaRegion>>;
}

struct SharedInner {
    fd: i32,
    sid: u32,
    region: Arc<dyn DmaRegion>,
}

/// A buffer shared with the DSP by handle (the dma-buf role). Cloning adds a reference; the
/// mapping lives until the last one (including those held by in-flight invokes) is dropped.
#[derive(Clone)]
pub struct SharedBuf {
    inner: Arc<SharedInner>,
}

impl core::fmt::Debug for SharedBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedBuf")
            .field("fd", &self.inner.fd)
            .field("iova", &self.iova())
            .field("len", &self.len())
            .finish()
    }
}

impl SharedBuf {
    /// Wrap a region allocated on context bank `sid` under descriptor number `fd` (> 0).
    pub fn new(fd: i32, sid: u32, region: Arc<dyn DmaRegion>) -> Self {
        SharedBuf {
            inner: Arc::new(SharedInner { fd, sid, region }),
        }
    }
    /// The descriptor number the DSP sees (the fd of a dma-buf).
    pub fn fd(&self) -> i32 {
        self.inner.fd
    }
    /// Context bank the buffer is mapped on.
    pub fn sid(&self) -> u32 {
        self.inner.sid
    }
    /// Bus address of byte 0 without the session bits.
    pub fn iova(&self) -> u64 {
        self.inner.region.iova()
    }
    /// Bus address as sent to the DSP: `iova | sid << 32`.
    pub fn bus_addr(&self) -> u64 {
        self.iova() | (u64::from(self.inner.sid) << 32)
    }
    /// AP virtual address of byte 0.
    pub fn va(&self) -> u64 {
        self.inner.region.va()
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.inner.region.len()
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copy `data` in at `off`.
    pub fn write(&self, off: usize, data: &[u8]) -> Result<()> {
        write_at(&*self.inner.region, off, data)
    }
    /// Copy out at `off`.
    pub fn read(&self, off: usize, out: &mut [u8]) -> Result<()> {
        read_at(&*self.inner.region, off, out)
    }
    /// Whether two handles name the same memory (identity, not fd number: a map cache keyed by
    /// fd alone is the CVE-2022-48872 family of bugs).
    pub fn same_memory(&self, other: &SharedBuf) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
    /// References alive (this one, clones, in-flight invokes).
    pub fn refs(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;

    #[test]
    fn accessors_check_bounds_and_copy() {
        let bus = crate::sim::SimBus::new();
        let r = bus.alloc(1, 4096).unwrap();
        let r = &*r;
        assert!(write_at(r, 4090, b"abcdef").is_ok(), "ends exactly at len");
        let mut b = [0u8; 6];
        read_at(r, 4090, &mut b).unwrap();
        assert_eq!(&b, b"abcdef");
        assert!(write_at(r, 4091, b"abcdef").is_err(), "one past the end");
        assert!(read_at(r, usize::MAX, &mut b).is_err(), "offset overflow");
        assert!(fill_at(r, 4096, 1, 0).is_err());
        assert!(write_at(r, 4096, b"").is_ok(), "empty at the end");
        read_at(r, 4090, &mut b).unwrap();
        assert_eq!(&b, b"abcdef", "a refused write wrote nothing");
        fill_at(r, 4090, 6, 0x5a).unwrap();
        read_at(r, 4090, &mut b).unwrap();
        assert_eq!(b, [0x5a; 6]);
    }

    /// The simulated DSP (through the SMMU path, `SimBus::write`, no lock around the region)
    /// rewrites a region while the AP reads and writes it: no references exist, so this is two
    /// agents doing byte-wise atomic copies. Each byte read is one some side wrote (never a torn or
    /// invented value), and mixed generations inside one read are expected and harmless.
    #[test]
    fn simulated_dsp_writes_concurrently_with_ap_reads() {
        use std::sync::atomic::AtomicBool;
        let bus = crate::sim::SimBus::new();
        let r = bus.alloc(1, 4096).unwrap();
        let addr = r.iova() | 1 << 32;
        let stop = Arc::new(AtomicBool::new(false));
        let dsp = {
            let (bus, stop) = (bus.clone(), stop.clone());
            std::thread::spawn(move || {
                let (a, b) = ([0xaau8; 4096], [0x55u8; 4096]);
                let mut n = 0usize;
                // Relaxed: a stop flag for the test, no data.
                while !stop.load(Ordering::Relaxed) {
                    assert!(bus.write(addr, if n.is_multiple_of(2) { &a } else { &b }));
                    n += 1;
                }
                n
            })
        };
        let mut buf = [0u8; 4096];
        let mut seen_dsp = false;
        let started = std::time::Instant::now();
        let mut i = 0usize;
        // At least 400 reads, and until the DSP thread has run (bounded for a loaded machine).
        while i < 400 || (!seen_dsp && started.elapsed().as_secs() < 20) {
            i += 1;
            read_at(&*r, 0, &mut buf).unwrap();
            for &x in &buf[..] {
                assert!(
                    matches!(x, 0 | 0xaa | 0x55 | 0x11),
                    "byte {x:#x} nobody wrote"
                );
            }
            seen_dsp |= buf.iter().any(|&x| x == 0xaa || x == 0x55);
            if i.is_multiple_of(4) {
                // The AP writes the same memory too (a request being built) meanwhile.
                write_at(&*r, 100, &[0x11; 64]).unwrap();
            }
        }
        // Relaxed: the stop flag, no data.
        stop.store(true, Ordering::Relaxed);
        let writes = dsp.join().unwrap();
        assert!(writes > 0 && seen_dsp, "the DSP's writes were observed");
        assert_eq!(bus.faults(), 0);
    }

    /// The same race, small enough for Miri (`.ci/run`: `miri -p fwipc-fastrpc --lib mem::tests`):
    /// the simulated DSP rewrites a region through the bus while the AP reads, writes and fills
    /// it with `read_at` / `write_at` / `fill_at` over the same two ranges, `0..40` and `40..48`
    /// (the same range ends, so both sides cover each word the same way whatever the region's
    /// alignment: `shared_mem`'s rule; the AP writes only the first). Miri reports a data race if any side made a non-atomic or mixed-size access to
    /// those bytes (e.g. `read_at` through a slice or `ptr::copy_nonoverlapping`, or a side
    /// storing byte by byte where the other copies words).
    #[cfg(feature = "std")]
    #[test]
    fn racing_dsp_and_ap_accessors_are_no_data_race() {
        let bus = crate::sim::SimBus::new();
        let r = bus.alloc(1, 4096).unwrap();
        let addr = r.iova() | 1 << 32;
        let dsp = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for v in 1..=8u8 {
                    assert!(bus.write(addr, &[v; 40]));
                    assert!(bus.write(addr + 40, &[v; 8]));
                }
            })
        };
        let mut buf = [0u8; 48];
        for _ in 0..8 {
            let (first, last) = buf.split_at_mut(40);
            read_at(&*r, 0, first).unwrap();
            read_at(&*r, 40, last).unwrap();
            // Every byte is one somebody wrote: 0 (zeroed), the DSP's 1..=8, ours 0x11/0x22.
            assert!(buf.iter().all(|&x| x <= 8 || x == 0x11 || x == 0x22));
            write_at(&*r, 0, &[0x11; 40]).unwrap();
            fill_at(&*r, 0, 40, 0x22).unwrap();
        }
        dsp.join().unwrap();
        read_at(&*r, 40, &mut buf[..8]).unwrap();
        assert!(
            buf[..8].iter().all(|&x| x == 8),
            "the DSP's last write stays"
        );
        assert_eq!(bus.faults(), 0);
    }
}
