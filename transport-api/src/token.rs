//! Monotonic token allocator with quarantine.
//!
//! Tokens identify a transfer on the wire (SCMI: 10 bits in the header). Linux hands out
//! `counter mod 2^bits` or the next free one after it; the counter only moves forward, so a token
//! that just finished is not reissued at once. We do the same and go one step further: a token
//! stays *in use* until its owner releases it, and the owner releases a timed-out transfer's
//! token only when the remote has given the buffer back (late-reply path). So a token is never
//! live twice, and a late reply can never complete a newer transfer.

use alloc::boxed::Box;

use crate::sync::{AtomicU32, CachePadded, Ordering};
use crate::{Error, Result};

/// A wire token, `< 2^bits` of its allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u32);

/// A token's cell: free.
const FREE: u32 = 0;
/// A token's cell: allocated, no value published ([`TokenAllocator::publish`] stores the value
/// plus one, so a value is never `FREE`, and values stay below this).
const RESERVED: u32 = u32::MAX;

/// Allocates tokens of a configurable bit width (1..=16). Fixed memory, allocated at setup.
///
/// Lock-free: one atomic cell per token (free, reserved, or the value published for it, such as
/// the transfer table entry a reply must reach), so a token's allocation is one compare-exchange
/// and its release and publication are plain stores: no atomic read-modify-write.
pub struct TokenAllocator {
    bits: u32,
    /// Where the next search starts (the monotonic counter). A hint: racing allocations may
    /// store it out of order, which can only reissue a token sooner; the cells decide who owns a
    /// token. On lines of its own (`CachePadded`): it is stored on every allocation, and the
    /// table that holds the allocator keeps beside it what the side answering a transfer reads
    /// (the pool and entry addresses; docs/benchmarks/changes.md, "The core's written words off
    /// the lines the other side reads").
    next: CachePadded<AtomicU32>,
    cells: Box<[AtomicU32]>,
}

impl TokenAllocator {
    /// An allocator for `bits`-wide tokens. `InvalidArgument` outside `1..=16`.
    pub fn new(bits: u32) -> Result<Self> {
        if !(1..=16).contains(&bits) {
            return Err(Error::InvalidArgument);
        }
        Ok(TokenAllocator {
            bits,
            next: CachePadded::new(AtomicU32::new(0)),
            cells: (0..1u32 << bits).map(|_| AtomicU32::new(FREE)).collect(),
        })
    }

    /// Number of distinct tokens.
    pub fn capacity(&self) -> u32 {
        1 << self.bits
    }

    /// Tokens currently in use (live or quarantined). Counts every cell: for statistics and
    /// tests, not for a fast path.
    pub fn in_use(&self) -> u32 {
        self.cells
            .iter()
            // Relaxed: a snapshot count.
            .filter(|c| c.load(Ordering::Relaxed) != FREE)
            .count() as u32
    }

    /// The next free token at or after the monotonic counter; `Busy` when two passes over the
    /// tokens found none free. Exact when takes and releases do not race (a table behind its
    /// backend's lock); otherwise a pass can miss a token released behind it while the ones
    /// ahead are taken, so with nearly every token in use a take racing others may be told
    /// `Busy` (back-pressure, as for a full table) where a lock would have found the released
    /// token. The second pass sees every release made before a take the first one met.
    #[inline]
    pub fn alloc(&self) -> Result<Token> {
        let cap = self.capacity();
        // Relaxed: only where to start looking (see `next`).
        let start = self.next.load(Ordering::Relaxed);
        for i in 0..2 * cap {
            let t = start.wrapping_add(i) & (cap - 1);
            let cell = &self.cells[t as usize];
            // A look first: a token in use costs no read-modify-write. Acquire (the look, and
            // the compare-exchange either way): pairs with the Release store of `release`, so
            // everything the token's previous holder did happens-before our use of it; and
            // with the Release of another taker's compare-exchange, so a scan that finds a
            // token just taken also sees the releases its taker made before taking it, and
            // does not answer `Busy` while one of those is free.
            if cell.load(Ordering::Acquire) == FREE
                && cell
                    .compare_exchange(FREE, RESERVED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                // Advance past the issued token: the monotonic counter is what keeps a
                // just-released token from coming straight back. Relaxed: a hint.
                self.next.store((t + 1) & (cap - 1), Ordering::Relaxed);
                return Ok(Token(t));
            }
        }
        Err(Error::Busy)
    }

    /// Whether `t` is currently allocated.
    pub fn is_live(&self, t: Token) -> bool {
        self.cells
            .get(t.0 as usize)
            // Relaxed: a snapshot.
            .is_some_and(|c| c.load(Ordering::Relaxed) != FREE)
    }

    /// Publish `value` (below `u32::MAX - 1`) for the allocated token `t`, for
    /// [`TokenAllocator::lookup`]; ignored for a token out of range.
    #[inline]
    pub fn publish(&self, t: Token, value: u32) {
        debug_assert!(value < RESERVED - 1 && self.is_live(t));
        if let Some(c) = self.cells.get(t.0 as usize) {
            // Release: whatever the caller wrote before (the entry the value names) is visible
            // to a `lookup` that sees the value.
            c.store(value + 1, Ordering::Release);
        }
    }

    /// The value published for `t`, if `t` is allocated and has one.
    #[inline]
    pub fn lookup(&self, t: u32) -> Option<u32> {
        // Acquire: pairs with the Release in `publish`.
        match self.cells.get(t as usize)?.load(Ordering::Acquire) {
            FREE | RESERVED => None,
            v => Some(v - 1),
        }
    }

    /// Give `t` back (with any value published for it). Releasing a token that is not
    /// allocated is reported, not ignored: it means a double release somewhere.
    #[inline]
    pub fn release(&self, t: Token) -> Result<()> {
        let Some(cell) = self.cells.get(t.0 as usize) else {
            return Err(Error::InvalidArgument);
        };
        // Relaxed: only the owner releases a token, so a free cell here is a bug to report.
        if cell.load(Ordering::Relaxed) == FREE {
            log::warn!("token {} released twice", t.0);
            return Err(Error::InvalidArgument);
        }
        // Release: our uses of the token happen-before its next holder's (Acquire in `alloc`).
        cell.store(FREE, Ordering::Release);
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_search_start_is_alone_on_its_lines() {
        use core::mem::{align_of, offset_of, size_of};
        // Line-aligned, so nothing around the allocator shares `next`'s lines either.
        assert!(align_of::<TokenAllocator>() >= 64);
        crate::line_layout::assert_alone(
            "next",
            offset_of!(TokenAllocator, next),
            size_of::<AtomicU32>(),
            &[
                ("bits", offset_of!(TokenAllocator, bits), size_of::<u32>()),
                (
                    "cells",
                    offset_of!(TokenAllocator, cells),
                    size_of::<Box<[AtomicU32]>>(),
                ),
            ],
        );
    }

    #[test]
    fn rejects_bad_widths() {
        assert_eq!(TokenAllocator::new(0).err(), Some(Error::InvalidArgument));
        assert_eq!(TokenAllocator::new(17).err(), Some(Error::InvalidArgument));
        assert_eq!(TokenAllocator::new(10).unwrap().capacity(), 1024);
    }

    #[test]
    fn monotonic_not_reissued_at_once() {
        let a = TokenAllocator::new(10).unwrap();
        let t0 = a.alloc().unwrap();
        a.release(t0).unwrap();
        let t1 = a.alloc().unwrap();
        assert_ne!(t0, t1, "a just-released token must not be reissued");
    }

    #[test]
    fn quarantined_token_never_reissued_across_wrap() {
        let a = TokenAllocator::new(4).unwrap();
        let stuck = a.alloc().unwrap(); // e.g. a timed-out transfer still owned by the remote
        for _ in 0..100 {
            let t = a.alloc().unwrap();
            assert_ne!(t, stuck);
            a.release(t).unwrap();
        }
        assert!(a.is_live(stuck));
        a.release(stuck).unwrap();
        assert!(!a.is_live(stuck));
    }

    #[test]
    fn exhaustion_is_busy_and_recovers() {
        let a = TokenAllocator::new(3).unwrap();
        let ts: Vec<_> = (0..8).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(a.alloc(), Err(Error::Busy));
        a.release(ts[5]).unwrap();
        assert_eq!(a.alloc(), Ok(ts[5]));
    }

    #[test]
    fn a_published_value_is_found_until_the_token_is_released() {
        let a = TokenAllocator::new(2).unwrap();
        let t = a.alloc().unwrap();
        assert_eq!(a.lookup(t.0), None, "taken, nothing published yet");
        a.publish(t, 0);
        assert_eq!(a.lookup(t.0), Some(0));
        assert_eq!(a.in_use(), 1);
        a.release(t).unwrap();
        assert_eq!((a.lookup(t.0), a.lookup(99)), (None, None));
        assert!(!a.is_live(t));
    }

    #[test]
    fn double_release_detected() {
        let a = TokenAllocator::new(3).unwrap();
        let t = a.alloc().unwrap();
        a.release(t).unwrap();
        assert_eq!(a.release(t), Err(Error::InvalidArgument));
        assert_eq!(a.release(Token(99)), Err(Error::InvalidArgument));
        assert_eq!(a.in_use(), 0);
    }

    proptest! {
        /// Against a model: live tokens are unique, in range, and the count matches.
        #[test]
        fn matches_model(ops in proptest::collection::vec(any::<(bool, u8)>(), 1..400)) {
            let a = TokenAllocator::new(5).unwrap();
            let mut live: Vec<Token> = Vec::new();
            for (alloc, pick) in ops {
                if alloc {
                    match a.alloc() {
                        Ok(t) => {
                            prop_assert!(t.0 < 32);
                            prop_assert!(!live.contains(&t));
                            live.push(t);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, Error::Busy);
                            prop_assert_eq!(live.len(), 32);
                        }
                    }
                } else if !live.is_empty() {
                    let t = live.swap_remove(pick as usize % live.len());
                    prop_assert!(a.release(t).is_ok());
                }
                prop_assert_eq!(a.in_use() as usize, live.len());
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::Arc;

    use super::*;

    /// Two threads take tokens of a two-token allocator while one is given back: no token is
    /// issued twice, the count is right, and a value published for a token is what `lookup`
    /// sees.
    #[test]
    fn racing_allocs_never_share_a_token() {
        loom::model(|| {
            let a = Arc::new(TokenAllocator::new(1).unwrap());
            let held = a.alloc().unwrap();
            let a2 = a.clone();
            let h = loom::thread::spawn(move || {
                let t = a2.alloc();
                if let Ok(t) = t {
                    a2.publish(t, 7);
                }
                t
            });
            a.release(held).unwrap();
            let mine = a.alloc();
            let theirs = h.join().unwrap();
            // One token was given back before the second take: both takes find one, and
            // never the same.
            let (Ok(x), Ok(y)) = (mine, theirs) else {
                panic!("a free token was missed: {mine:?} {theirs:?}");
            };
            assert_ne!(x, y);
            assert_eq!(a.in_use(), 2);
            assert_eq!((a.lookup(y.0), a.lookup(x.0)), (Some(7), None));
        });
    }
}
