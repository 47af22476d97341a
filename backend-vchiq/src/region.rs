//! The shared-memory region: slot zero, the slots, the fragment pool and the pagelists, reached
//! only through bounds-checked atomic accessors (docs/protocols/vchiq.md §3 gap (c): never
//! `&`/`&mut` to shared structs; the peer writes concurrently and may be hostile).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::consts::VCHIQ_SLOT_SIZE;
use crate::error::{VResult, VchiqError};

/// A shared region handed to the core by the embedder.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    bus: u32,
    keep: Option<alloc::sync::Arc<OwnedRegion>>,
}

// SAFETY: the region is plain shared memory accessed only through atomics; the `Region::new`
// contract makes it valid for the whole life of the value, from any thread.
unsafe impl Send for Region {}
// SAFETY: as above: all accesses are atomic, so shared use from several threads is sound.
unsafe impl Sync for Region {}

impl core::fmt::Debug for Region {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The CPU address is deliberately not printed (no internal addresses leave the crate).
        f.debug_struct("Region")
            .field("len", &self.len)
            .field("bus", &self.bus)
            .finish()
    }
}

impl Region {
    /// Wrap `len` bytes at `base`, whose VideoCore bus address is `bus`.
    ///
    /// # Safety
    /// `base..base+len` must be valid for reads and writes for as long as the `Region` (and every
    /// instance built on it) lives, must not be accessed other than atomically by anyone else in
    /// this address space, and must be the memory the peer sees at `bus`. `base` must be 4 KiB
    /// aligned (slot zero starts at the region start).
    pub unsafe fn new(base: *mut u8, len: usize, bus: u32) -> VResult<Region> {
        let base = NonNull::new(base).ok_or(VchiqError::Invalid)?;
        if !(base.as_ptr() as usize).is_multiple_of(VCHIQ_SLOT_SIZE)
            || !(bus as usize).is_multiple_of(VCHIQ_SLOT_SIZE)
        {
            return Err(VchiqError::Invalid);
        }
        if (bus as u64) + (len as u64) > (1u64 << 32) {
            return Err(VchiqError::Invalid);
        }
        Ok(Region {
            base,
            len,
            bus,
            keep: None,
        })
    }

    /// Region length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bus address of the region start.
    pub fn bus(&self) -> u32 {
        self.bus
    }

    /// The region offset of bus address `bus` if `[bus, bus+len)` lies inside the region.
    pub fn bus_to_offset(&self, bus: u32, len: usize) -> Option<usize> {
        let off = bus.checked_sub(self.bus)? as usize;
        (off.checked_add(len)? <= self.len).then_some(off)
    }

    /// The word at `off`, if aligned and in bounds.
    pub fn word(&self, off: usize) -> Option<&AtomicU32> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 4-aligned (checked above; base is page-aligned); the region is
        // valid for the life of `self` (`new`'s contract) and AtomicU32 has u32's layout; shared
        // mutation through an atomic reference is allowed.
        Some(unsafe { &*(self.base.as_ptr().add(off) as *const AtomicU32) })
    }

    /// `n` consecutive words at `off`, if aligned and in bounds.
    pub fn words(&self, off: usize, n: usize) -> Option<&[AtomicU32]> {
        if !off.is_multiple_of(4) || off.checked_add(n.checked_mul(4)?)? > self.len {
            return None;
        }
        // SAFETY: as in `word`, for `n` words, all in bounds.
        Some(unsafe {
            core::slice::from_raw_parts(self.base.as_ptr().add(off) as *const AtomicU32, n)
        })
    }

    /// Load the word at `off` (0 if out of bounds, logged).
    pub fn load(&self, off: usize, o: Ordering) -> u32 {
        match self.word(off) {
            Some(w) => w.load(o),
            None => {
                log::error!(target: "vchiq", "region load out of bounds at {off:#x}");
                0
            }
        }
    }

    /// Store the word at `off` (ignored and logged if out of bounds).
    pub fn store(&self, off: usize, v: u32, o: Ordering) {
        match self.word(off) {
            Some(w) => w.store(v, o),
            None => log::error!(target: "vchiq", "region store out of bounds at {off:#x}"),
        }
    }

    /// Copy `out.len()` bytes from `off`; `false` (nothing copied) if out of bounds.
    pub fn read_bytes(&self, off: usize, out: &mut [u8]) -> bool {
        if off.checked_add(out.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        // SAFETY: the range is inside the region (checked), valid per `new`'s contract.
        unsafe { copy_from_shared(self.base.as_ptr().add(off), out) };
        true
    }

    /// Copy `data` to `off`; `false` (nothing written) if out of bounds.
    pub fn write_bytes(&self, off: usize, data: &[u8]) -> bool {
        if off.checked_add(data.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        // SAFETY: the range is inside the region (checked), valid per `new`'s contract.
        unsafe { copy_to_shared(self.base.as_ptr().add(off), data) };
        true
    }

    /// Fill `len` bytes at `off` with zero.
    pub fn zero(&self, off: usize, len: usize) -> bool {
        if off.checked_add(len).is_none_or(|e| e > self.len) {
            return false;
        }
        for i in 0..len {
            // SAFETY: in bounds (checked above); AtomicU8 has u8's layout.
            let b = unsafe { &*(self.base.as_ptr().add(off + i) as *const AtomicU8) };
            // Relaxed: initialisation before the owner publishes `initialised`.
            b.store(0, Ordering::Relaxed);
        }
        true
    }
}

/// Copy from memory another agent may write concurrently, with relaxed atomic accesses (so a
/// racing hostile writer yields garbage data, never undefined behaviour). Ordering comes from the
/// protocol's Release/Acquire publication around the copy.
///
/// # Safety
/// `src..src+out.len()` must be valid for reads.
pub(crate) unsafe fn copy_from_shared(src: *const u8, out: &mut [u8]) {
    let mut i = 0;
    let n = out.len();
    while i < n && !(src as usize + i).is_multiple_of(4) {
        // SAFETY: `src + i` is in the caller's valid range; AtomicU8 has u8's layout.
        out[i] = unsafe { (*(src.add(i) as *const AtomicU8)).load(Ordering::Relaxed) };
        i += 1;
    }
    while i + 4 <= n {
        // SAFETY: 4-aligned (loop above) and in range; AtomicU32 has u32's layout.
        let w = unsafe { (*(src.add(i) as *const AtomicU32)).load(Ordering::Relaxed) };
        out[i..i + 4].copy_from_slice(&w.to_le_bytes());
        i += 4;
    }
    while i < n {
        // SAFETY: in range; AtomicU8 has u8's layout.
        out[i] = unsafe { (*(src.add(i) as *const AtomicU8)).load(Ordering::Relaxed) };
        i += 1;
    }
}

/// Copy into memory another agent may read concurrently (relaxed atomics; see
/// [`copy_from_shared`]).
///
/// # Safety
/// `dst..dst+data.len()` must be valid for writes.
pub(crate) unsafe fn copy_to_shared(dst: *mut u8, data: &[u8]) {
    let mut i = 0;
    let n = data.len();
    while i < n && !(dst as usize + i).is_multiple_of(4) {
        // SAFETY: in the caller's valid range; AtomicU8 has u8's layout.
        unsafe { (*(dst.add(i) as *const AtomicU8)).store(data[i], Ordering::Relaxed) };
        i += 1;
    }
    while i + 4 <= n {
        let w = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        // SAFETY: 4-aligned and in range; AtomicU32 has u32's layout.
        unsafe { (*(dst.add(i) as *const AtomicU32)).store(w, Ordering::Relaxed) };
        i += 4;
    }
    while i < n {
        // SAFETY: in range; AtomicU8 has u8's layout.
        unsafe { (*(dst.add(i) as *const AtomicU8)).store(data[i], Ordering::Relaxed) };
        i += 1;
    }
}

/// A zeroed, page-aligned heap allocation to use as a region (simulator, fuzzing, tests).
pub struct OwnedRegion {
    ptr: NonNull<u8>,
    layout: core::alloc::Layout,
}

// SAFETY: the allocation is only accessed through `Region`'s atomic accessors.
unsafe impl Send for OwnedRegion {}
// SAFETY: as above.
unsafe impl Sync for OwnedRegion {}

impl OwnedRegion {
    /// Allocate `len` zeroed bytes, 4 KiB aligned.
    pub fn new(len: usize) -> VResult<alloc::sync::Arc<OwnedRegion>> {
        let layout =
            core::alloc::Layout::from_size_align(len.max(VCHIQ_SLOT_SIZE), VCHIQ_SLOT_SIZE)
                .map_err(|_| VchiqError::NoMemory)?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or(VchiqError::NoMemory)?;
        Ok(alloc::sync::Arc::new(OwnedRegion { ptr, layout }))
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A [`Region`] view at bus address `bus`; it keeps the allocation alive.
    pub fn region(self: &alloc::sync::Arc<Self>, bus: u32) -> VResult<Region> {
        // SAFETY: the allocation is valid for `len` bytes and stays alive as long as the Region
        // (which holds an Arc to it); it is page-aligned; all access goes through Region.
        let mut r = unsafe { Region::new(self.ptr.as_ptr(), self.len(), bus)? };
        r.keep = Some(self.clone());
        Ok(r)
    }
}

impl Drop for OwnedRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; no Region outlives us (they hold an Arc).
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
