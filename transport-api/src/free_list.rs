//! [`FreeList`]: a locked stack of free indices, the pool's free buffers and the entries of a
//! transfer table with generations.
//!
//! Its indices live in whole 128-byte blocks from a 128-byte boundary ([`IndexBlock`]), not in a
//! `Vec<u32>`: every free writes them, and a `Vec`'s buffer, placed wherever the allocator puts
//! a few dozen bytes, can share a cache line with another object the other side of a round trip
//! writes. A simulated device's register lock landed beside a pool's stack that way in one build
//! and not in another, and the cache-line model (docs/benchmarks.md, "Cache lines per round
//! trip") counted one line more per round trip for it, each way. Hand-written rather than a
//! crate's: a fixed-capacity stack of `u32` on lines of its own is a few lines, and none of the
//! field's crates lays one out so.

use alloc::boxed::Box;
use alloc::vec;

use crate::sync::{AtomicUsize, Lock, LockGuard, Ordering};

/// Indices per [`IndexBlock`].
const PER_BLOCK: usize = 32;

/// What a [`FreeList`]'s indices are stored in: 128 bytes on a 128-byte boundary (the largest
/// cache writeback granule of the Arm cores Linux supports, as for the pool's buffers), so the
/// stack shares no line with anything else.
#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct IndexBlock([u32; PER_BLOCK]);

const _: () = assert!(core::mem::size_of::<IndexBlock>() == 128);

/// A stack of at most `cap` indices, in whole [`IndexBlock`]s.
struct IndexStack {
    blocks: Box<[IndexBlock]>,
    len: usize,
    cap: usize,
}

impl IndexStack {
    /// `0..count`, lowest on top (popped first).
    fn new(count: u32) -> Self {
        let cap = count as usize;
        let mut s = IndexStack {
            blocks: vec![IndexBlock([0; PER_BLOCK]); cap.div_ceil(PER_BLOCK)].into_boxed_slice(),
            len: 0,
            cap,
        };
        for i in (0..count).rev() {
            s.push(i);
        }
        s
    }

    #[inline]
    fn pop(&mut self) -> Option<u32> {
        let i = self.len.checked_sub(1)?;
        let v = self.blocks.get(i / PER_BLOCK)?.0[i % PER_BLOCK];
        self.len = i;
        Some(v)
    }

    /// `false` (and nothing stored) when full: an index pushed twice, which the callers rule out
    /// (each index is pushed back only by the one user that popped it).
    #[inline]
    fn push(&mut self, idx: u32) -> bool {
        let i = self.len;
        if i >= self.cap {
            return false;
        }
        let Some(b) = self.blocks.get_mut(i / PER_BLOCK) else {
            return false;
        };
        b.0[i % PER_BLOCK] = idx;
        self.len = i + 1;
        true
    }
}

/// A stack of free indices `0..count` behind the lock shim, lowest handed out first: the pool's
/// free list, and the entries of a transfer table with generations, which number their entries
/// with nothing else. Its capacity is `count`, reserved at setup; an index is pushed back only
/// by the one user that popped it, so it is never full when pushed to.
pub(crate) struct FreeList {
    stack: Lock<IndexStack>,
    /// The stack's length, stored (not read-modify-written) under the lock after every push and
    /// pop, so [`FreeList::len`] is one load: a receive path that sizes its work by the free
    /// buffers reads it once per pass.
    len: AtomicUsize,
}

impl FreeList {
    /// All of `0..count` free.
    pub(crate) fn new(count: u32) -> Self {
        FreeList {
            stack: Lock::new(IndexStack::new(count)),
            len: AtomicUsize::new(count as usize),
        }
    }

    /// Take a free index (one lock: one atomic read-modify-write).
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        self.lock().pop()
    }

    /// Give back an index taken by [`FreeList::pop`]: it is the next one handed out.
    #[inline]
    pub(crate) fn push(&self, idx: u32) {
        self.lock().push(idx);
    }

    /// Hold the list's lock: pops, pushes and a count of the free indices under one hold (the
    /// guard keeps `len` in step with each), released when the returned guard is dropped.
    ///
    /// The guard, not a method taking a closure, is what lets the pool free itself right after
    /// the release (`free_slot`, `MsgPool`'s `Drop`): the caller drops it in its own frame, where
    /// the pool is reached through a plain local borrow. A `&self` method that released the lock
    /// inside would still hold its argument, a borrow Rust requires to stay valid until the
    /// method returns, while the other thread, seeing the release, frees the pool under it.
    #[inline]
    pub(crate) fn lock(&self) -> FreeGuard<'_> {
        FreeGuard {
            stack: self.stack.lock(),
            len: &self.len,
        }
    }

    /// Indices free: exact as of the last push or pop this thread is ordered after; one that
    /// races with this call may or may not be counted, as with a locked read that came a moment
    /// earlier or later. Relaxed: a count, nothing is published with it (an index is taken
    /// only through `pop`, under the lock).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// A held [`FreeList`] (see [`FreeList::lock`]).
pub(crate) struct FreeGuard<'a> {
    stack: LockGuard<'a, IndexStack>,
    len: &'a AtomicUsize,
}

impl FreeGuard<'_> {
    /// Take a free index.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<u32> {
        let idx = self.stack.pop();
        // Relaxed: see `FreeList::len`.
        self.len.store(self.stack.len, Ordering::Relaxed);
        idx
    }

    /// Give back an index: it is the next one handed out. An index pushed twice (a bug of the
    /// caller's, which owns the index it pushes) is not stored, so the stack never outgrows its
    /// blocks; debug builds stop there.
    #[inline]
    pub(crate) fn push(&mut self, idx: u32) {
        let stored = self.stack.push(idx);
        debug_assert!(stored, "free list: index {idx} pushed onto a full list");
        // Relaxed: see `FreeList::len`.
        self.len.store(self.stack.len, Ordering::Relaxed);
    }

    /// Indices free, exact (under the lock).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.stack.len
    }
}

#[cfg(test)]
mod tests {
    use super::{FreeList, IndexStack, PER_BLOCK};

    /// Lowest index first, last pushed next out, across block boundaries; a push beyond the
    /// capacity is refused, not stored past the blocks.
    #[test]
    fn a_stack_hands_out_low_indices_first_and_never_outgrows_its_blocks() {
        for count in [0u32, 1, 31, 32, 33, 64, 100] {
            let mut s = IndexStack::new(count);
            assert_eq!(s.blocks.len(), (count as usize).div_ceil(PER_BLOCK));
            let popped: alloc::vec::Vec<u32> = core::iter::from_fn(|| s.pop()).collect();
            assert_eq!(popped, (0..count).collect::<alloc::vec::Vec<_>>());
            for i in (0..count).rev() {
                assert!(s.push(i));
            }
            assert!(
                !s.push(7),
                "count {count}: a push onto a full stack was stored"
            );
            assert_eq!(s.len, count as usize);
            assert_eq!(s.pop(), (count > 0).then_some(0));
        }
    }

    #[test]
    fn the_list_counts_what_it_holds() {
        let f = FreeList::new(40);
        let taken: alloc::vec::Vec<u32> = (0..35).map(|_| f.pop().unwrap()).collect();
        assert_eq!(f.len(), 5);
        f.push(taken[34]);
        assert_eq!(f.pop(), Some(34));
        for i in taken.into_iter().rev() {
            f.push(i);
        }
        assert_eq!(f.len(), 40);
        assert_eq!(f.pop(), Some(0));
    }

    /// The blocks start on a 128-byte boundary, so the stack shares no line.
    #[test]
    fn the_blocks_own_their_lines() {
        let s = IndexStack::new(70);
        assert_eq!(s.blocks.as_ptr() as usize % 128, 0);
    }
}
