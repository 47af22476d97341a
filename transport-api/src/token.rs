//! Monotonic token allocator with quarantine.
//!
//! Tokens identify a transfer on the wire (SCMI: 10 bits in the header). Linux hands out
//! `counter mod 2^bits` or the next free one after it; the counter only moves forward, so a token
//! that just finished is not reissued at once. We do the same and go one step further: a token
//! stays *in use* until its owner releases it, and the owner releases a timed-out transfer's
//! token only when the remote has given the buffer back (late-reply path). So a token is never
//! live twice, and a late reply can never complete a newer transfer.

use alloc::vec;
use alloc::vec::Vec;

use crate::sync::Lock;
use crate::{Error, Result};

/// A wire token, `< 2^bits` of its allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u32);

struct State {
    next: u32,
    in_use: Vec<u64>,
    live: u32,
}

/// Allocates tokens of a configurable bit width (1..=16). Fixed memory, allocated at setup.
pub struct TokenAllocator {
    bits: u32,
    state: Lock<State>,
}

impl TokenAllocator {
    /// An allocator for `bits`-wide tokens. `InvalidArgument` outside `1..=16`.
    pub fn new(bits: u32) -> Result<Self> {
        if !(1..=16).contains(&bits) {
            return Err(Error::InvalidArgument);
        }
        let words = (1usize << bits).div_ceil(64);
        Ok(TokenAllocator {
            bits,
            state: Lock::new(State {
                next: 0,
                in_use: vec![0; words],
                live: 0,
            }),
        })
    }

    /// Number of distinct tokens.
    pub fn capacity(&self) -> u32 {
        1 << self.bits
    }

    /// Tokens currently in use (live or quarantined).
    pub fn in_use(&self) -> u32 {
        self.state.lock().live
    }

    /// The next free token at or after the monotonic counter; `Busy` when all are in use.
    pub fn alloc(&self) -> Result<Token> {
        let cap = self.capacity();
        let mut s = self.state.lock();
        if s.live >= cap {
            return Err(Error::Busy);
        }
        let start = s.next;
        for i in 0..cap {
            let t = (start + i) & (cap - 1);
            let (w, b) = ((t / 64) as usize, t % 64);
            if s.in_use[w] & (1 << b) == 0 {
                s.in_use[w] |= 1 << b;
                s.live += 1;
                // Advance past the issued token: the monotonic counter is what keeps a
                // just-released token from coming straight back.
                s.next = (t + 1) & (cap - 1);
                return Ok(Token(t));
            }
        }
        Err(Error::Busy)
    }

    /// Whether `t` is currently allocated.
    pub fn is_live(&self, t: Token) -> bool {
        if t.0 >= self.capacity() {
            return false;
        }
        let s = self.state.lock();
        s.in_use[(t.0 / 64) as usize] & (1 << (t.0 % 64)) != 0
    }

    /// Give `t` back. Releasing a token that is not allocated is reported, not ignored: it means
    /// a double release somewhere.
    pub fn release(&self, t: Token) -> Result<()> {
        if t.0 >= self.capacity() {
            return Err(Error::InvalidArgument);
        }
        let mut s = self.state.lock();
        let (w, b) = ((t.0 / 64) as usize, t.0 % 64);
        if s.in_use[w] & (1 << b) == 0 {
            log::warn!("token {} released twice", t.0);
            return Err(Error::InvalidArgument);
        }
        s.in_use[w] &= !(1 << b);
        s.live -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
