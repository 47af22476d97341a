//! The copy accessors for memory the remote can write (docs/reliability.md, "Invariants" item 1;
//! docs/memory-ordering.md, "Shared memory").
//!
//! Such memory is never reached through a Rust reference (`&[u8]`, `&mut [u8]`, `&T`): another
//! agent writing it while the reference lives is a data race, undefined behaviour. It is copied
//! in and out with Relaxed atomic accesses made from the raw pointer (the only references are
//! the transient `&AtomicUsize` / `&AtomicU8` of `from_ptr`), so a racing (hostile) writer
//! yields garbage bytes, never undefined behaviour. Data is parsed from the private copy,
//! fetched once. Ordering comes from the protocol's Release/Acquire publication around the copy
//! (a ring index, a doorbell word), not from these accesses.
//!
//! # What a copy does
//!
//! A copy is *byte-wise atomic*, as C++ P1478 ("Byte-wise atomic memcpy") and Rust RFC 3301
//! (`AtomicPerByte`) define it: every byte of the range is read or written by an atomic access,
//! in no particular order and with no ordering against other memory. Under a racing writer each
//! byte copied out is a value somebody wrote to it; nothing more is promised (two bytes may come
//! from different writes). The accesses:
//!
//! - the bytes from the start of the range to the first native-word boundary, and from the last
//!   word boundary to the end (the *edges*), one Relaxed `AtomicU8` access each;
//! - every naturally aligned native word (`usize`: 8 bytes on 64-bit targets, 4 on 32-bit ones)
//!   wholly inside the range, one Relaxed `AtomicUsize` access each, four per loop round.
//!
//! No byte outside the range is read or written, not even written back unchanged: a word only
//! partly inside the range is moved byte by byte, never read-modify-written (its other bytes may
//! be someone else's, changing under us).
//!
//! # Why that is sound
//!
//! - **Hardware.** A naturally aligned word access is single-copy atomic, and therefore atomic
//!   for each of its bytes: Arm Architecture Reference Manual (DDI 0487), "Single-copy
//!   atomicity" (aligned byte, halfword, word and doubleword accesses); Intel SDM Vol. 3A,
//!   "Guaranteed Atomic Operations" (aligned 16-, 32- and 64-bit accesses) for x86. A remote
//!   core or DMA engine writing single bytes, or words, of memory we read as words hands us the
//!   old or the new value of each byte, which is all a byte-wise atomic copy promises.
//! - **Language.** In one address space (the simulators and tests, where the remote is a Rust
//!   thread) the Rust memory model (C++20's) leaves racing atomic accesses of *different sizes*
//!   to the same bytes undefined when one of them writes (Miri reports them as data races). So
//!   an in-process remote moves these bytes with these same functions, and two accesses that can
//!   race on one word must cover it the same way: both as that whole word, or both byte by byte.
//!   The split depends only on the range's two ends, so two ranges with the same ends always
//!   agree, and so do two ranges whose differing ends fall on word boundaries. A test that races
//!   on purpose (a hostile remote rewriting a buffer while the driver copies it) therefore has
//!   its remote write, with [`copy_to_shared`] / [`fill_shared`], exactly the ranges the driver
//!   reads (or ranges that differ only at word boundaries); a remote storing `AtomicU8` by
//!   `AtomicU8` over a range the driver reads as words is a mixed-size race in the model, though
//!   harmless on hardware. Accesses the protocol orders (no race) may be of any size.
//!
//! # Why hand-written
//!
//! `ptr::copy_nonoverlapping` and `read_volatile` are non-atomic accesses (a race with the
//! remote is undefined behaviour), and the `atomic-memcpy` crate, the prototype of RFC 3301,
//! loads or stores one value of a fixed-size type `T`; these copy a length known only at run
//! time between a raw range and a private slice.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Bytes in a native word, the width of the interior accesses.
const WORD: usize = core::mem::size_of::<usize>();

/// Words per round of the copy loops: the loop's own count, compare and branch are paid once
/// per four word accesses (the accesses stay one word wide each).
const ROUND_WORDS: usize = 4;

/// Bytes per round of the copy loops.
const ROUND: usize = ROUND_WORDS * WORD;

/// Load the byte at `p` (a Relaxed `AtomicU8` load).
///
/// # Safety
/// `p` valid for reads; no racing access of another size to this byte (module documentation).
#[inline(always)]
unsafe fn load(p: *const u8) -> u8 {
    // SAFETY: valid (caller contract); a `u8` is always aligned for `AtomicU8`; no racing
    // mixed-size access (caller contract).
    let cell = unsafe { AtomicU8::from_ptr(p as *mut u8) };
    // Relaxed: a copy; ordered by the protocol's publication (module documentation).
    cell.load(Ordering::Relaxed)
}

/// Store `v` at `p` (a Relaxed `AtomicU8` store).
///
/// # Safety
/// `p` valid for writes; no racing access of another size to this byte (module documentation).
#[inline(always)]
unsafe fn store(p: *mut u8, v: u8) {
    // SAFETY: as in `load`, for writes.
    let cell = unsafe { AtomicU8::from_ptr(p) };
    // Relaxed: a copy; published by the protocol's Release store after it.
    cell.store(v, Ordering::Relaxed);
}

/// Load the native word at `p` (a Relaxed `AtomicUsize` load), as its bytes in memory order.
///
/// # Safety
/// `p` aligned to [`WORD`], valid for reads of `WORD` bytes; no racing access of another size
/// to them (module documentation).
#[inline(always)]
unsafe fn load_word(p: *const u8) -> [u8; WORD] {
    // SAFETY: aligned and valid (caller contract; `AtomicUsize` is `WORD`-aligned); no racing
    // mixed-size access (caller contract).
    let cell = unsafe { AtomicUsize::from_ptr(p as *mut usize) };
    // Relaxed: a copy; ordered by the protocol's publication (module documentation).
    cell.load(Ordering::Relaxed).to_ne_bytes()
}

/// Store the bytes `v` (memory order) to the native word at `p` (a Relaxed `AtomicUsize`
/// store).
///
/// # Safety
/// As [`load_word`], for writes.
#[inline(always)]
unsafe fn store_word(p: *mut u8, v: [u8; WORD]) {
    // SAFETY: as in `load_word`, for writes.
    let cell = unsafe { AtomicUsize::from_ptr(p as *mut usize) };
    // Relaxed: a copy; published by the protocol's Release store after it.
    cell.store(usize::from_ne_bytes(v), Ordering::Relaxed);
}

/// Bytes from `p` to the next word boundary, at most `n`: the leading edge of `[p, p + n)`.
#[inline(always)]
fn head_len(p: *const u8, n: usize) -> usize {
    (p.addr().wrapping_neg() % WORD).min(n)
}

/// Copy `out.len()` bytes from memory another agent may write concurrently, byte-wise
/// atomically (module documentation).
///
/// # Safety
/// `src..src+out.len()` must be valid for reads for the duration of the call, and reached by
/// everyone else, while the copy runs, only by atomic accesses that cover each word the way this
/// copy does (module documentation, "Why that is sound"), or not at all.
// Inlined (also `copy_to_shared`): most copies are a message's few words (a 4-byte header, a
// 32-byte payload), where the call and the edge arithmetic cost more than the bytes, and a call
// site that knows the length folds most of that away. Bulk copies run the same loops.
#[inline]
pub unsafe fn copy_from_shared(src: *const u8, out: &mut [u8]) {
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout; the copy below only writes
    // initialised bytes through it, so `out` stays initialised. The caller's contract for `src`
    // is passed on.
    let out = unsafe { &mut *(core::ptr::from_mut(out) as *mut [MaybeUninit<u8>]) };
    // SAFETY: the caller's contract.
    unsafe { copy_out(src, out) };
}

/// [`copy_from_shared`] into memory that need not be initialised (a receive buffer on the
/// stack, which then costs no zeroing), returning the bytes copied, now initialised.
///
/// # Safety
/// As [`copy_from_shared`].
#[inline]
pub unsafe fn copy_from_shared_uninit(src: *const u8, out: &mut [MaybeUninit<u8>]) -> &mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { copy_out(src, out) }
}

/// The copy of [`copy_from_shared`] and [`copy_from_shared_uninit`], inlined into both.
///
/// # Safety
/// As [`copy_from_shared`].
#[inline(always)]
unsafe fn copy_out(src: *const u8, out: &mut [MaybeUninit<u8>]) -> &mut [u8] {
    let n = out.len();
    let (head, rest) = out.split_at_mut(head_len(src, n));
    for (j, o) in head.iter_mut().enumerate() {
        // SAFETY: `src + j` is in the caller's range (`j < head.len() <= out.len()`).
        o.write(unsafe { load(src.add(j)) });
    }
    // Word-aligned from here (or `rest` is empty).
    let mut p = src.wrapping_add(head.len());
    let (rounds, rest) = rest.as_chunks_mut::<ROUND>();
    for round in rounds {
        for (j, w) in round.as_chunks_mut::<WORD>().0.iter_mut().enumerate() {
            // SAFETY: `p + j * WORD` is word-aligned and its word is in the caller's range
            // (`p` advances by whole rounds of `out`).
            *w = unsafe { load_word(p.add(j * WORD)) }.map(MaybeUninit::new);
        }
        p = p.wrapping_add(ROUND);
    }
    let (words, tail) = rest.as_chunks_mut::<WORD>();
    for w in words {
        // SAFETY: as above, for the words after the last whole round.
        *w = unsafe { load_word(p) }.map(MaybeUninit::new);
        p = p.wrapping_add(WORD);
    }
    for (j, o) in tail.iter_mut().enumerate() {
        // SAFETY: `p + j` is in the caller's range: the trailing edge of `out`.
        o.write(unsafe { load(p.add(j)) });
    }
    // SAFETY: every byte of `out` was written above (head, whole rounds, whole words, tail
    // cover `0..n`, each once), so all `n` are initialised; the slice reborrows `out`.
    unsafe { core::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), n) }
}

/// Copy `data` into memory another agent may read (or write) concurrently, byte-wise
/// atomically (module documentation).
///
/// # Safety
/// `dst..dst+data.len()` must be valid for writes for the duration of the call, and reached by
/// everyone else, while the copy runs, only by atomic accesses that cover each word the way this
/// copy does (module documentation, "Why that is sound"), or not at all.
#[inline]
pub unsafe fn copy_to_shared(dst: *mut u8, data: &[u8]) {
    let (head, rest) = data.split_at(head_len(dst, data.len()));
    for (j, &b) in head.iter().enumerate() {
        // SAFETY: `dst + j` is in the caller's range (`j < head.len() <= data.len()`).
        unsafe { store(dst.add(j), b) };
    }
    // Word-aligned from here (or `rest` is empty).
    let mut p = dst.wrapping_add(head.len());
    let (rounds, rest) = rest.as_chunks::<ROUND>();
    for round in rounds {
        for (j, &w) in round.as_chunks::<WORD>().0.iter().enumerate() {
            // SAFETY: `p + j * WORD` is word-aligned and its word is in the caller's range
            // (`p` advances by whole rounds of `data`).
            unsafe { store_word(p.add(j * WORD), w) };
        }
        p = p.wrapping_add(ROUND);
    }
    let (words, tail) = rest.as_chunks::<WORD>();
    for &w in words {
        // SAFETY: as above, for the words after the last whole round.
        unsafe { store_word(p, w) };
        p = p.wrapping_add(WORD);
    }
    for (j, &b) in tail.iter().enumerate() {
        // SAFETY: `p + j` is in the caller's range: the trailing edge of `data`.
        unsafe { store(p.add(j), b) };
    }
}

/// Set `n` bytes of memory another agent may read (or write) concurrently to `v`: the same
/// accesses as [`copy_to_shared`] of `n` copies of `v`, without a private buffer of that size.
///
/// # Safety
/// As [`copy_to_shared`], for `dst..dst+n`.
pub unsafe fn fill_shared(dst: *mut u8, n: usize, v: u8) {
    let head = head_len(dst, n);
    for j in 0..head {
        // SAFETY: `dst + j` is in the caller's range (`j < head <= n`).
        unsafe { store(dst.add(j), v) };
    }
    let words = (n - head) / WORD;
    // Word-aligned from here (or `words` is 0).
    let p = dst.wrapping_add(head);
    for k in 0..words {
        // SAFETY: `p + k * WORD` is word-aligned and its word is in `dst..dst+n`
        // (`head + words * WORD <= n`).
        unsafe { store_word(p.add(k * WORD), [v; WORD]) };
    }
    for j in head + words * WORD..n {
        // SAFETY: `dst + j` is in the caller's range: the trailing edge.
        unsafe { store(dst.add(j), v) };
    }
}

#[cfg(test)]
mod tests {
    use core::ops::Range;
    use core::sync::atomic::AtomicU64;
    use std::boxed::Box;
    use std::vec;

    use proptest::prelude::*;

    use super::*;

    /// Bytes on each side of the ranges under test that no copy may touch.
    const GUARD: usize = 16;
    /// A guard byte's value: none of the copies below writes it.
    const G: u8 = 0xEE;

    /// Test memory of `len` bytes (rounded up to 8), all `v`, 8-aligned: an offset from its
    /// start is an offset from a word boundary on every target.
    fn shared(len: usize, v: u8) -> Box<[AtomicU64]> {
        (0..len.div_ceil(8))
            .map(|_| AtomicU64::new(u64::from_ne_bytes([v; 8])))
            .collect()
    }

    /// The start of `mem` as the raw pointer the accessors take.
    fn ptr(mem: &[AtomicU64]) -> *mut u8 {
        mem.as_ptr() as *mut u8
    }

    /// The first `N` of `mem`'s bytes, read with its own `u64` atomics (not the code under
    /// test; no thread races with this).
    fn bytes<const N: usize>(mem: &[AtomicU64]) -> [u8; N] {
        let mut b = [0u8; N];
        for (c, w) in b.as_chunks_mut::<8>().0.iter_mut().zip(mem) {
            // Relaxed: no other thread runs.
            *c = w.load(Ordering::Relaxed).to_ne_bytes();
        }
        b
    }

    /// Set `mem`'s bytes to `b` (its length) with plain writes, as memory is (re)initialised
    /// before it is shared. (Not atomic stores: the Miri of nightlies before mid-2026 stops with
    /// an internal error, rust-lang/miri#5185, on an atomic store that partly overlaps an
    /// earlier atomic store of another size, even one that happens before it; a plain write in
    /// between resets its per-location store history.)
    fn set(mem: &[AtomicU64], b: &[u8]) {
        for (w, c) in mem.iter().zip(b.as_chunks::<8>().0) {
            // SAFETY: `w.as_ptr()` is valid and aligned; no other thread runs while tests
            // call `set`, so this plain write races with nothing.
            unsafe { w.as_ptr().write(u64::from_ne_bytes(*c)) };
        }
    }

    /// Every length 0..=40 at every start offset 0..=15 from a word boundary (so: no word,
    /// head and tail only, whole rounds, rounds plus words plus edges, on 32- and 64-bit
    /// targets), into memory with guard bytes on both sides: a copy in, a fill and a copy out
    /// move exactly the bytes asked for and leave every other byte as it was. (Under Miri the
    /// offsets 0..=7 only, every phase of a 64-bit word, to keep the run short.)
    #[test]
    fn copies_of_every_length_move_exactly_those_bytes() {
        const LEN: usize = GUARD + 16 + 40 + GUARD;
        let mem = shared(LEN, G);
        let offsets = if cfg!(miri) { 0..=7 } else { 0..=15 };
        // Values that differ from `G` and from their neighbours, for the copies out.
        let pattern: [u8; LEN] = core::array::from_fn(|i| i as u8 + 1);
        let guards = [G; LEN];
        let mut data = [0u8; 40];
        let mut out = [0u8; 40];
        for off in offsets {
            for n in 0..=40 {
                let at = GUARD + off;
                let data = &mut data[..n];
                for (k, d) in data.iter_mut().enumerate() {
                    *d = ((off * 41 + k) % 200) as u8 + 1;
                }

                set(&mem, &guards);
                let mut want = guards;
                want[at..at + n].copy_from_slice(data);
                // SAFETY: `at + n <= LEN` bytes of `mem`; no other thread.
                unsafe { copy_to_shared(ptr(&mem).wrapping_add(at), data) };
                assert_eq!(bytes(&mem), want, "copy of {n} to offset {off}");

                set(&mem, &guards);
                want[at..at + n].fill(0x5a);
                // SAFETY: as above.
                unsafe { fill_shared(ptr(&mem).wrapping_add(at), n, 0x5a) };
                assert_eq!(bytes(&mem), want, "fill of {n} at offset {off}");

                set(&mem, &pattern);
                let out = &mut out[..n];
                // SAFETY: as above.
                unsafe { copy_from_shared(ptr(&mem).wrapping_add(at), out) };
                assert_eq!(
                    out[..],
                    pattern[at..at + n],
                    "copy of {n} from offset {off}"
                );
                assert_eq!(bytes(&mem), pattern, "a copy out wrote");

                // Into memory never initialised: every byte returned was written (Miri reports
                // a read of one that was not), and they are the same bytes.
                let mut raw = [MaybeUninit::<u8>::uninit(); 64];
                // SAFETY: as above.
                let got =
                    unsafe { copy_from_shared_uninit(ptr(&mem).wrapping_add(at), &mut raw[..n]) };
                assert_eq!(
                    got,
                    &pattern[at..at + n],
                    "uninit copy of {n} from offset {off}"
                );
            }
        }
    }

    proptest! {
        /// Copies in and out at any offset and length agree with `copy_from_slice` on a
        /// private array holding the same bytes.
        #[test]
        fn copies_agree_with_copy_from_slice(
            off in 0..64usize,
            data in proptest::collection::vec(any::<u8>(), 0..300),
            (from, n) in (0..364usize, 0..364usize),
        ) {
            let len = 64 + 300;
            let mem = shared(len, 0);
            let mut model = vec![0u8; len];
            // SAFETY: `off + data.len() < 364` bytes of `mem`; no other thread.
            unsafe { copy_to_shared(ptr(&mem).wrapping_add(off), &data) };
            model[off..off + data.len()].copy_from_slice(&data);
            prop_assert_eq!(&bytes::<368>(&mem)[..len], &model[..]);
            let n = n.min(len - from);
            let mut out = vec![0u8; n];
            // SAFETY: `from + n <= len` bytes of `mem`.
            unsafe { copy_from_shared(ptr(&mem).wrapping_add(from), &mut out) };
            let mut want = vec![0u8; n];
            want.copy_from_slice(&model[from..from + n]);
            prop_assert_eq!(out, want);
        }
    }

    /// A writer thread keeps rewriting `writer` (copies and fills, as a hostile remote that
    /// follows the rule) while this thread copies `reader` out and in: no data race (Miri:
    /// `cargo +nightly miri test -p fwipc-transport-api --lib shared_mem`, which reports a
    /// mixed-size race if the two cover a word differently), every byte copied out is one
    /// somebody stored, and the bytes outside both ranges keep their value.
    fn race(reader: Range<usize>, writer: Range<usize>) {
        let len = GUARD + 32 + GUARD;
        let mem = shared(len, 0);
        let (r, w) = (reader.clone(), writer.clone());
        std::thread::scope(|s| {
            let mem = &mem;
            s.spawn(move || {
                let p = ptr(mem).wrapping_add(GUARD + w.start);
                for v in 1..=8u8 {
                    // SAFETY: inside `mem`, which outlives the scope; the reader covers every
                    // word it shares with `w` the same way (the callers' ranges).
                    unsafe { copy_to_shared(p, &vec![v; w.len()]) };
                    // SAFETY: as above.
                    unsafe { fill_shared(p, w.len(), v) };
                }
            });
            let p = ptr(mem).wrapping_add(GUARD + r.start);
            let mut out = vec![0u8; r.len()];
            for _ in 0..8 {
                // SAFETY: as for the writer.
                unsafe { copy_from_shared(p, &mut out) };
                assert!(out.iter().all(|&b| b <= 8 || b == 0xaa), "{out:?}");
                // SAFETY: as above.
                unsafe { copy_to_shared(p, &vec![0xaa; r.len()]) };
            }
        });
        let after: [u8; GUARD + 32 + GUARD] = bytes(&mem);
        for (i, &b) in after.iter().enumerate() {
            let i = i.wrapping_sub(GUARD);
            if !reader.contains(&i) && !writer.contains(&i) {
                assert_eq!(b, 0, "byte {i} outside both ranges was written");
            }
        }
    }

    /// The same range, word-aligned at both ends: words only.
    #[test]
    fn racing_copies_over_whole_words_yield_bytes_not_undefined_behaviour() {
        race(0..32, 0..32);
    }

    /// The same range with byte edges on both sides (bytes, then words, then bytes), and one
    /// inside a single word (bytes only).
    #[test]
    fn racing_copies_with_byte_edges_yield_bytes_not_undefined_behaviour() {
        race(3..29, 3..29);
        race(9..14, 9..14);
    }

    /// Different ranges that differ only at word boundaries cover their common words the same
    /// way: a remote rewriting a whole buffer while the driver copies a word-aligned part.
    #[test]
    fn racing_copies_differing_at_word_boundaries_yield_bytes_not_undefined_behaviour() {
        race(8..24, 0..32);
    }
}
