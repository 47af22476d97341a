//! The byte-copy accessors for memory the remote can write (docs/reliability.md, "Invariants"
//! item 1; docs/memory-ordering.md).
//!
//! Such memory is never reached through a Rust reference (`&[u8]`, `&mut [u8]`, `&T`): another
//! agent writing it while the reference lives is a data race, undefined behaviour. It is copied
//! in and out one byte at a time with Relaxed `AtomicU8` accesses made from the raw pointer, so a
//! racing (hostile) writer yields garbage bytes, never undefined behaviour, as long as every
//! agent uses one access width (bytes) on those bytes: racing atomics of different sizes on the
//! same bytes are undefined behaviour too. Data is parsed from the private copy, fetched once.
//! Ordering comes from the protocol's Release/Acquire publication around the copy (a ring index,
//! a doorbell word), not from these accesses.

use core::sync::atomic::{AtomicU8, Ordering};

/// Bytes per round of the copy loops below: eight byte accesses per iteration, so the loop's
/// own count, compare and branch are paid once per eight bytes (the accesses themselves stay
/// one byte wide, the module's rule).
const UNROLL: usize = 8;

/// Load the byte at `p` (a Relaxed `AtomicU8` load).
///
/// # Safety
/// `p` valid for reads, reached by everyone else only through byte-sized atomics.
#[inline(always)]
unsafe fn load(p: *const u8) -> u8 {
    // SAFETY: valid (caller contract); a `u8` is always aligned for `AtomicU8`; only byte-sized
    // atomics reach these bytes (caller contract).
    let cell = unsafe { AtomicU8::from_ptr(p as *mut u8) };
    // Relaxed: a copy; ordered by the protocol's publication (module documentation).
    cell.load(Ordering::Relaxed)
}

/// Store `v` at `p` (a Relaxed `AtomicU8` store).
///
/// # Safety
/// `p` valid for writes, reached by everyone else only through byte-sized atomics.
#[inline(always)]
unsafe fn store(p: *mut u8, v: u8) {
    // SAFETY: as in `load`, for writes.
    let cell = unsafe { AtomicU8::from_ptr(p) };
    // Relaxed: a copy; published by the protocol's Release store after it.
    cell.store(v, Ordering::Relaxed);
}

/// Copy `out.len()` bytes from memory another agent may write concurrently.
///
/// # Safety
/// `src..src+out.len()` must be valid for reads for the duration of the call, and accessed by
/// everyone else only with byte-sized atomics (or not at all) while the copy runs.
pub unsafe fn copy_from_shared(src: *const u8, out: &mut [u8]) {
    let (rounds, tail) = out.as_chunks_mut::<UNROLL>();
    let mut p = src;
    for round in rounds {
        for (j, o) in round.iter_mut().enumerate() {
            // SAFETY: `p + j` is in the caller's range (`p` advances by whole rounds of `out`).
            *o = unsafe { load(p.add(j)) };
        }
        p = p.wrapping_add(UNROLL);
    }
    for (j, o) in tail.iter_mut().enumerate() {
        // SAFETY: as above, for the last bytes of `out`.
        *o = unsafe { load(p.add(j)) };
    }
}

/// Copy `data` into memory another agent may read (or write) concurrently.
///
/// # Safety
/// `dst..dst+data.len()` must be valid for writes for the duration of the call, and accessed by
/// everyone else only with byte-sized atomics (or not at all) while the copy runs.
pub unsafe fn copy_to_shared(dst: *mut u8, data: &[u8]) {
    let (rounds, tail) = data.as_chunks::<UNROLL>();
    let mut p = dst;
    for round in rounds {
        for (j, &b) in round.iter().enumerate() {
            // SAFETY: `p + j` is in the caller's range (`p` advances by whole rounds of `data`).
            unsafe { store(p.add(j), b) };
        }
        p = p.wrapping_add(UNROLL);
    }
    for (j, &b) in tail.iter().enumerate() {
        // SAFETY: as above, for the last bytes of `data`.
        unsafe { store(p.add(j), b) };
    }
}

/// Set `n` bytes of memory another agent may read (or write) concurrently to `v`: the same
/// access as [`copy_to_shared`] of `n` copies of `v`, without a private buffer of that size.
///
/// # Safety
/// As [`copy_to_shared`], for `dst..dst+n`.
pub unsafe fn fill_shared(dst: *mut u8, n: usize, v: u8) {
    for i in 0..n {
        // SAFETY: `dst + i` is in the caller's range `dst..dst+n`.
        unsafe { store(dst.add(i), v) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer thread keeps changing the bytes (byte atomics, as a remote that follows the
    /// rule) while we copy them in and out: no data race (Miri:
    /// `cargo +nightly miri test -p fwipc-transport-api --lib shared_mem`), and every copied
    /// byte is one the writer or we stored.
    #[test]
    fn racing_writer_yields_bytes_not_undefined_behaviour() {
        let mem: std::boxed::Box<[AtomicU8]> = (0..16).map(|_| AtomicU8::new(0)).collect();
        let base = mem.as_ptr() as *mut u8;
        let addr = base as usize;
        std::thread::scope(|s| {
            s.spawn(move || {
                for v in 1..=20u8 {
                    for i in 0..16 {
                        // SAFETY: in bounds of `mem`, which outlives the scope; byte atomics.
                        let c = unsafe { AtomicU8::from_ptr((addr as *mut u8).add(i)) };
                        // Relaxed: a racing writer, nothing published.
                        c.store(v, Ordering::Relaxed);
                    }
                }
            });
            let mut out = [0u8; 16];
            for _ in 0..10 {
                // SAFETY: 16 valid bytes, reached only through byte atomics.
                unsafe { copy_from_shared(base, &mut out) };
                assert!(out.iter().all(|&b| b <= 20 || b == 0xAA));
                // SAFETY: as above.
                unsafe { copy_to_shared(base, &[0xAA; 4]) };
                // SAFETY: as above.
                unsafe { fill_shared(base.wrapping_add(4), 4, 0xAA) };
            }
        });
    }

    /// Copies of every length around the eight-byte rounds, at every offset in a word, move
    /// exactly the bytes asked for: the unrolled rounds and the tail agree with a byte array.
    #[test]
    fn copies_of_every_length_move_exactly_those_bytes() {
        let mem: std::boxed::Box<[AtomicU8]> = (0..40).map(|_| AtomicU8::new(0)).collect();
        let base = mem.as_ptr() as *mut u8;
        let mut model = [0u8; 40];
        for off in 0..8 {
            for n in 0..=26 {
                let data: std::vec::Vec<u8> =
                    (0..n).map(|k| (off * 31 + n * 7 + k) as u8).collect();
                // SAFETY: `off + n <= 34` bytes of `mem`, reached only through byte atomics.
                unsafe { copy_to_shared(base.wrapping_add(off), &data) };
                model[off..off + n].copy_from_slice(&data);
                let mut all = [0u8; 40];
                // SAFETY: the 40 bytes of `mem`.
                unsafe { copy_from_shared(base, &mut all) };
                assert_eq!(all, model, "copy of {n} to {off}");
                let mut part = std::vec![0u8; n];
                // SAFETY: as for the copy in.
                unsafe { copy_from_shared(base.wrapping_add(off), &mut part) };
                assert_eq!(part[..], model[off..off + n], "copy of {n} from {off}");
            }
        }
    }

    #[test]
    fn fill_sets_exactly_the_range() {
        let mem: std::boxed::Box<[AtomicU8]> = (0..8).map(|_| AtomicU8::new(1)).collect();
        let base = mem.as_ptr() as *mut u8;
        // SAFETY: bytes 2..6 of `mem`, reached only through byte atomics.
        unsafe { fill_shared(base.wrapping_add(2), 4, 9) };
        let mut out = [0u8; 8];
        // SAFETY: the 8 bytes of `mem`.
        unsafe { copy_from_shared(base, &mut out) };
        assert_eq!(out, [1, 1, 9, 9, 9, 9, 1, 1]);
    }
}
