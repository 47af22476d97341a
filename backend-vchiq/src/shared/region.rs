//! The shared-memory region: slot zero, the slots, the fragment pool and the pagelists, reached
//! only through bounds-checked atomic accessors (docs/protocols/vchiq.md §3 gap (c): never
//! `&`/`&mut` to shared structs; the peer writes concurrently and may be hostile).
//!
//! # One access width: aligned 32-bit words
//!
//! Every access this crate makes to region memory is a Relaxed/Acquire/Release **`AtomicU32` on a
//! 4-byte-aligned word**, whatever the caller asked for: [`Region::read_bytes`] loads every word
//! the byte range touches and keeps the bytes it wants; [`Region::write_bytes`] and
//! [`Region::zero`] store whole words, and a word the range covers only partly is read, changed
//! in our private copy and stored back whole (read-modify-write on our side, never a byte store).
//! Racing atomic accesses of *different sizes* to the same bytes are undefined behaviour in the
//! Rust memory model (and Miri reports them); a hostile peer makes every access potentially
//! racing, so one width is the only rule that holds whatever the peer does. Hardware agrees: an
//! aligned 32-bit load or store is single-copy atomic on every Arm core VCHIQ runs on.
//!
//! The read-modify-write rewrites the other bytes of a partly covered word with the values just
//! read, so a caller may only write byte ranges whose partly covered words it owns entirely
//! (nobody else writes them while it does). The protocol gives exactly that: messages start
//! 8-byte aligned in the sender's own slots (the padding up to the next message is the sender's
//! too), a fragment belongs to the one transfer using it, and the pagelist and slot-zero fields
//! are whole words. A peer that writes our bytes anyway only loses its own write: no undefined
//! behaviour, no effect on our parsing (we parse private copies).
//!
//! Bulk data pages (the slave's buffers, outside the region; reached by the master role through
//! [`Platform::bulk_bus_to_cpu`](crate::Platform::bulk_bus_to_cpu)) follow the other rule of this
//! workspace (as `fwipc-fastrpc`'s `mem` module): the byte-wise atomic copies of
//! `fwipc_transport_api::shared_mem`, which move each native word wholly inside the transfer's
//! bytes with one `AtomicUsize` access and the bytes at its edges with `AtomicU8`, and never
//! touch a byte outside it, because a word read-modify-write there would rewrite bytes next to
//! the transfer that belong to someone else. The master refuses a bulk page that overlaps the
//! region ([`Region::overlaps`]), so the region's `u32` words and those copies never meet on the
//! same bytes.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

/// Bytes per access: the one width used on region memory.
const WORD: usize = 4;

use crate::error::{Result, VchiqError};
use crate::wire::consts::VCHIQ_SLOT_SIZE;

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
    /// aligned (slot zero starts at the region start). `len` must be a multiple of 4 (every
    /// access is a whole aligned word; see the module documentation).
    pub unsafe fn new(base: *mut u8, len: usize, bus: u32) -> Result<Region> {
        let base = NonNull::new(base).ok_or(VchiqError::Invalid)?;
        if !(base.as_ptr() as usize).is_multiple_of(VCHIQ_SLOT_SIZE)
            || !(bus as usize).is_multiple_of(VCHIQ_SLOT_SIZE)
            || !len.is_multiple_of(WORD)
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

    /// Whether `[addr, addr + len)` (CPU addresses) shares any byte with the region.
    pub fn overlaps(&self, addr: usize, len: usize) -> bool {
        let base = self.base.as_ptr() as usize;
        let end = addr.saturating_add(len);
        len > 0 && addr < base.saturating_add(self.len) && base < end
    }

    /// Copy `out.len()` bytes from `off`; `false` (nothing copied) if out of bounds. Loads whole
    /// aligned words (the module's one-width rule), so a concurrent peer yields some mix of old
    /// and new words, never undefined behaviour.
    pub fn read_bytes(&self, off: usize, out: &mut [u8]) -> bool {
        if off.is_multiple_of(WORD) && out.len().is_multiple_of(WORD) {
            // Whole words (every message header and the payloads of the protocol's word-sized
            // lengths): no partly covered word to handle.
            let Some(words) = self.words(off, out.len() / WORD) else {
                return false;
            };
            for (o, w) in out.as_chunks_mut::<WORD>().0.iter_mut().zip(words) {
                // Relaxed: as below.
                *o = w.load(Ordering::Relaxed).to_le_bytes();
            }
            return true;
        }
        let Some(mut words) = self.covering(off, out.len()) else {
            return false;
        };
        if out.is_empty() {
            return true;
        }
        // Relaxed, every load below: a copy; ordering comes from the protocol's Release/Acquire
        // publication (tx_pos, slot_queue) around it.
        let mut out = out;
        let skip = off % WORD;
        if skip != 0 {
            // The first word is partly covered: keep its bytes from `skip` on.
            let Some((w, rest)) = words.split_first() else {
                return false;
            };
            let bytes = w.load(Ordering::Relaxed).to_le_bytes();
            let take = (WORD - skip).min(out.len());
            let (head, tail) = out.split_at_mut(take);
            head.copy_from_slice(&bytes[skip..skip + take]);
            (out, words) = (tail, rest);
        }
        // `out` now starts on a word boundary: whole words, then the last, partly covered one.
        let (whole, last) = out.as_chunks_mut::<WORD>();
        for (o, w) in whole.iter_mut().zip(words) {
            *o = w.load(Ordering::Relaxed).to_le_bytes();
        }
        if !last.is_empty() {
            let Some(w) = words.get(whole.len()) else {
                return false;
            };
            let bytes = w.load(Ordering::Relaxed).to_le_bytes();
            last.copy_from_slice(&bytes[..last.len()]);
        }
        true
    }

    /// Copy `data` to `off`; `false` (nothing written) if out of bounds. Stores whole aligned
    /// words; a word the range covers only partly is read, changed and stored back whole, so the
    /// caller must own the whole of such words (module documentation).
    pub fn write_bytes(&self, off: usize, data: &[u8]) -> bool {
        self.store_bytes(off, data.len(), Src::Bytes(data))
    }

    /// Fill `len` bytes at `off` with zero (whole-word stores, as [`Region::write_bytes`]).
    pub fn zero(&self, off: usize, len: usize) -> bool {
        self.store_bytes(off, len, Src::Zero)
    }

    /// The words covering `[off, off + n)`, if in bounds (none for `n == 0`).
    fn covering(&self, off: usize, n: usize) -> Option<&[AtomicU32]> {
        let end = off.checked_add(n)?;
        if end > self.len {
            return None;
        }
        let first = off - off % WORD;
        // `end <= len` and `len` is a multiple of 4, so rounding up stays in bounds.
        self.words(first, end.div_ceil(WORD) - first / WORD)
    }

    /// Store `n` bytes at `off` as whole aligned words: the `n` bytes of `src`, or zeros.
    fn store_bytes(&self, off: usize, n: usize, src: Src<'_>) -> bool {
        if let Src::Bytes(d) = src {
            if off.is_multiple_of(WORD) && n.is_multiple_of(WORD) && d.len() == n {
                // Whole words (a message's header and parts at their 8-aligned offsets, of
                // word-sized lengths): no partly covered word to read back.
                let Some(words) = self.words(off, n / WORD) else {
                    return false;
                };
                for (b, w) in d.as_chunks::<WORD>().0.iter().zip(words) {
                    // Relaxed: as below.
                    w.store(u32::from_le_bytes(*b), Ordering::Relaxed);
                }
                return true;
            }
        }
        let Some(mut words) = self.covering(off, n) else {
            return false;
        };
        if n == 0 {
            // Nothing to store: not even the covering word is touched.
            return true;
        }
        // Relaxed, every store below: a copy; published to the peer by the protocol's Release
        // store (tx_pos, or the message that names the fragment/pagelist).
        let (mut pos, end) = (off, off + n);
        // The source bytes for `[from, to)`: always there, `src` has `n` bytes from `off`.
        let part = |from: usize, to: usize| match src {
            Src::Bytes(d) => d.get(from - off..to - off).map(Src::Bytes),
            Src::Zero => Some(Src::Zero),
        };
        if pos % WORD != 0 || n < WORD {
            // The first word is partly covered.
            let Some((w, rest)) = words.split_first() else {
                return false;
            };
            let hi = end.min(pos - pos % WORD + WORD);
            let Some(p) = part(pos, hi) else {
                return false;
            };
            Self::patch(w, pos % WORD, p, hi - pos);
            (pos, words) = (hi, rest);
        }
        // `pos` is now on a word boundary (or `pos == end`).
        let whole = (end - pos) / WORD;
        let Some((mid, rest)) = words.split_at_checked(whole) else {
            return false;
        };
        match part(pos, pos + whole * WORD) {
            Some(Src::Bytes(d)) => {
                for (b, w) in d.as_chunks::<WORD>().0.iter().zip(mid) {
                    w.store(u32::from_le_bytes(*b), Ordering::Relaxed);
                }
            }
            Some(Src::Zero) => mid.iter().for_each(|w| w.store(0, Ordering::Relaxed)),
            None => return false,
        }
        pos += whole * WORD;
        if pos < end {
            let (Some(w), Some(p)) = (rest.first(), part(pos, end)) else {
                return false;
            };
            Self::patch(w, 0, p, end - pos);
        }
        true
    }

    /// Replace `n` bytes of word `w` from byte `at` with `src` (`n` bytes, or zeros), storing
    /// the word back whole. Relaxed load: the word is ours (caller contract), so this only reads
    /// back what we last wrote or what the peer scribbled over it.
    fn patch(w: &AtomicU32, at: usize, src: Src<'_>, n: usize) {
        let mut b = w.load(Ordering::Relaxed).to_le_bytes();
        if let Some(part) = b.get_mut(at..at + n) {
            match src {
                Src::Bytes(d) => part.copy_from_slice(d),
                Src::Zero => part.fill(0),
            }
        }
        // Relaxed: as the copy's other stores.
        w.store(u32::from_le_bytes(b), Ordering::Relaxed);
    }
}

/// What [`Region::store_bytes`] stores.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// Zeros.
    Zero,
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
    /// Allocate `len` zeroed bytes (at least one page, rounded up to whole words), 4 KiB aligned.
    pub fn new(len: usize) -> Result<alloc::sync::Arc<OwnedRegion>> {
        let layout = core::alloc::Layout::from_size_align(
            len.max(VCHIQ_SLOT_SIZE).next_multiple_of(WORD),
            VCHIQ_SLOT_SIZE,
        )
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
    pub fn region(self: &alloc::sync::Arc<Self>, bus: u32) -> Result<Region> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn region(len: usize) -> (alloc::sync::Arc<OwnedRegion>, Region) {
        let mem = OwnedRegion::new(len).unwrap();
        let r = mem.region(0x4000_0000).unwrap();
        (mem, r)
    }

    /// Byte copies at every alignment and length across word boundaries behave like a byte
    /// array: the bytes asked for change, their neighbours in the same words keep their value.
    #[test]
    fn byte_copies_cross_word_boundaries() {
        let (_m, r) = region(4096);
        let mut model = [0u8; 32];
        for (i, b) in model.iter_mut().enumerate() {
            *b = i as u8 ^ 0xa5;
        }
        assert!(r.write_bytes(0, &model));
        let mut fill = 0u8;
        for off in 0..9 {
            for n in 0..14 {
                fill = fill.wrapping_add(17);
                let data: alloc::vec::Vec<u8> =
                    (0..n).map(|k| fill.wrapping_add(k as u8)).collect();
                assert!(r.write_bytes(off, &data));
                model[off..off + n].copy_from_slice(&data);
                let mut all = [0u8; 32];
                assert!(r.read_bytes(0, &mut all));
                assert_eq!(all, model, "write of {n} at {off}");
                let mut part = alloc::vec![0u8; n];
                assert!(r.read_bytes(off, &mut part));
                assert_eq!(part[..], model[off..off + n], "read of {n} at {off}");
                let (z, zn) = (off + n / 2, n / 3);
                assert!(r.zero(z, zn));
                model[z..z + zn].fill(0);
                assert!(r.read_bytes(0, &mut all));
                assert_eq!(all, model, "zero of {zn} at {z}");
            }
        }
        assert!(r.zero(3, 6));
        model[3..9].fill(0);
        let mut all = [0u8; 32];
        assert!(r.read_bytes(0, &mut all));
        assert_eq!(all, model);
        // The end of the region, and one past it.
        assert!(r.write_bytes(4093, &[1, 2, 3]));
        let mut t = [0u8; 3];
        assert!(r.read_bytes(4093, &mut t));
        assert_eq!(t, [1, 2, 3]);
        assert!(!r.write_bytes(4094, &[1, 2, 3]));
        assert!(!r.read_bytes(4094, &mut t));
        assert!(!r.zero(usize::MAX, 2));
        assert!(r.write_bytes(4096, &[]), "empty at the end");
        // Whole words past the end (the aligned path).
        assert!(!r.write_bytes(4096, &[1, 2, 3, 4]));
        assert!(!r.read_bytes(4092, &mut [0u8; 8]));
        let mut w = [0u8; 4];
        assert!(r.write_bytes(4092, &[9, 8, 7, 6]) && r.read_bytes(4092, &mut w));
        assert_eq!(w, [9, 8, 7, 6]);
    }

    #[test]
    fn length_must_be_whole_words() {
        let mem = OwnedRegion::new(4096).unwrap();
        // SAFETY: a view of `mem`'s allocation, which outlives it; all access is atomic.
        let bad = unsafe { Region::new(mem.ptr.as_ptr(), 4094, 0x4000_0000) };
        assert!(
            bad.is_err(),
            "a length that is not a multiple of 4 is refused"
        );
        assert_eq!(OwnedRegion::new(4099).unwrap().len() % WORD, 0);
    }

    /// The peer (another thread) loads and stores the words of a message while we copy bytes in
    /// and out of it at unaligned offsets. Every access on both sides is an aligned `AtomicU32`,
    /// so this is a data race on nothing; with byte-sized head/tail accesses beside the peer's
    /// word accesses it is a mixed-size atomic race, which Miri reports as undefined behaviour
    /// (`cargo +nightly miri test -p fwipc-vchiq --lib region::tests::racing`).
    #[test]
    fn racing_peer_word_accesses_beside_unaligned_copies() {
        let (mem, r) = region(4096);
        let peer = {
            let r = mem.region(0x4000_0000).unwrap();
            std::thread::spawn(move || {
                let mut seen = 0u32;
                for k in 0..24u32 {
                    for w in 0..4 {
                        // Relaxed: a hostile peer, no protocol ordering.
                        seen ^= r.load(w * 4, Ordering::Relaxed);
                        r.store(w * 4, k.wrapping_mul(0x0101_0101), Ordering::Relaxed);
                    }
                }
                seen
            })
        };
        let mut out = [0u8; 9];
        for k in 0..24u8 {
            assert!(r.write_bytes(1, &[k; 6]));
            assert!(r.read_bytes(3, &mut out));
            assert!(r.zero(6, 5));
        }
        let _ = peer.join().unwrap();
    }
}
