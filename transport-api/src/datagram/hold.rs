//! Held receive buffers: generation-checked handles, so a second release is refused and counted
//! instead of freeing a buffer twice.

use alloc::boxed::Box;

use super::{Rx, RxAction};
use crate::sync::{AtomicU64, Lock, Ordering};
use crate::{Error, PoolBuf, Result};

/// A handle to a received datagram's buffer, valid from [`crate::RxAction::Hold`] until its
/// first [`crate::Datagram::release_rx`]. `Copy` on purpose (it may be kept in C structures or
/// passed around): the generation, not the type, makes a second release harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RxHold {
    slot: u32,
    generation: u32,
}

impl RxHold {
    /// The receive buffer's index in its pool.
    pub const fn slot(&self) -> u32 {
        self.slot
    }

    /// The delivery's generation (each delivery through a slot gets a new one).
    pub const fn generation(&self) -> u32 {
        self.generation
    }
}

struct Held {
    generation: u32,
    buf: Option<PoolBuf>,
}

/// The backend side of RX hold/release: one entry per receive-pool buffer, allocated at setup.
/// Use: [`HoldTable::deliver`] before showing a buffer to the callback, [`HoldTable::hold`] if it
/// returned [`crate::RxAction::Hold`], [`HoldTable::release`] from
/// [`crate::Datagram::release_rx`].
pub struct HoldTable {
    slots: Box<[Lock<Held>]>,
    held: AtomicU64,
    double_releases: AtomicU64,
}

impl core::fmt::Debug for HoldTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HoldTable")
            .field("capacity", &self.slots.len())
            .field("held", &self.held())
            .finish()
    }
}

impl HoldTable {
    /// A table for a receive pool of `capacity` buffers.
    pub fn new(capacity: usize) -> Self {
        HoldTable {
            slots: (0..capacity)
                .map(|_| {
                    Lock::new(Held {
                        generation: 0,
                        buf: None,
                    })
                })
                .collect(),
            held: AtomicU64::new(0),
            double_releases: AtomicU64::new(0),
        }
    }

    /// A fresh handle for delivering `buf`: every earlier handle to its slot goes stale.
    /// `InvalidArgument` if the buffer's index is outside the table.
    pub fn deliver(&self, buf: &PoolBuf) -> Result<RxHold> {
        let slot = buf.index();
        let mut h = self
            .slots
            .get(slot as usize)
            .ok_or(Error::InvalidArgument)?
            .lock();
        h.generation = h.generation.wrapping_add(1);
        Ok(RxHold {
            slot,
            generation: h.generation,
        })
    }

    /// Keep `buf` under `hold` (from [`HoldTable::deliver`] for this buffer). `InvalidArgument`
    /// if the handle is not the slot's latest delivery; `buf` is then dropped.
    pub fn hold(&self, hold: RxHold, buf: PoolBuf) -> Result<()> {
        let mut h = self
            .slots
            .get(hold.slot as usize)
            .ok_or(Error::InvalidArgument)?
            .lock();
        if h.generation != hold.generation || h.buf.is_some() || buf.index() != hold.slot {
            return Err(Error::InvalidArgument);
        }
        h.buf = Some(buf);
        // Relaxed: statistics counter only.
        self.held.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Release a held buffer. A handle that is not held (released already, never held, stale) is
    /// refused with `InvalidArgument` and counted.
    pub fn release(&self, hold: RxHold) -> Result<()> {
        let buf = match self.slots.get(hold.slot as usize) {
            Some(s) => {
                let mut h = s.lock();
                if h.generation == hold.generation {
                    h.buf.take()
                } else {
                    None
                }
            }
            None => None,
        };
        match buf {
            // Dropped outside the slot lock: the pool's free list has its own.
            Some(b) => {
                drop(b);
                // Relaxed: statistics counter only.
                self.held.fetch_sub(1, Ordering::Relaxed);
                Ok(())
            }
            None => {
                // Relaxed: statistics counter only.
                self.double_releases.fetch_add(1, Ordering::Relaxed);
                log::warn!("datagram: release of a buffer that is not held ({hold:?})");
                Err(Error::InvalidArgument)
            }
        }
    }

    /// The body of every backend's [`crate::Datagram::poll_rx`]: up to `budget` times, take the
    /// next queued datagram from `next` (its source and buffer; `None` when the queue is empty),
    /// show it to `f` with a fresh handle, and keep it if `f` returns [`RxAction::Hold`]. A
    /// buffer `f` releases is dropped, then `released` is told its index (e.g. to give the
    /// remote its slot back). Returns how many datagrams were shown. `f` runs with no lock of the
    /// table held, only the buffer's own.
    pub fn poll(
        &self,
        budget: usize,
        next: &mut dyn FnMut() -> Result<Option<(u32, PoolBuf)>>,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
        released: &mut dyn FnMut(u32),
    ) -> Result<usize> {
        let mut n = 0;
        while n < budget {
            let Some((src, buf)) = next()? else { break };
            let hold = self.deliver(&buf)?;
            let len = buf.len();
            let action = buf.with(|b| {
                f(Rx {
                    src,
                    data: &b[..len],
                    hold,
                })
            });
            match action {
                RxAction::Hold => self.hold(hold, buf)?,
                RxAction::Release => {
                    let idx = buf.index();
                    drop(buf);
                    released(idx);
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// Run `f` on a held buffer's valid bytes; `InvalidArgument` if `hold` is not held.
    pub fn with(&self, hold: RxHold, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        let h = self
            .slots
            .get(hold.slot as usize)
            .ok_or(Error::InvalidArgument)?
            .lock();
        match &h.buf {
            Some(b) if h.generation == hold.generation => {
                let n = b.len();
                b.with(|d| f(&d[..n]));
                Ok(())
            }
            _ => Err(Error::InvalidArgument),
        }
    }

    /// Buffers held right now.
    pub fn held(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.held.load(Ordering::Relaxed)
    }

    /// Refused releases so far.
    pub fn double_releases(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.double_releases.load(Ordering::Relaxed)
    }

    /// Release everything (shutdown); every outstanding handle goes stale.
    pub fn release_all(&self) {
        for s in self.slots.iter() {
            let b = {
                let mut h = s.lock();
                h.generation = h.generation.wrapping_add(1);
                h.buf.take()
            };
            if b.is_some() {
                // Relaxed: statistics counter only.
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::MsgPool;

    #[test]
    fn hold_release_then_double_release_is_refused_and_counted() {
        let p = MsgPool::new(2, 8).unwrap();
        let t = HoldTable::new(2);
        let b = p.alloc().unwrap();
        b.write(b"xy").unwrap();
        let h = t.deliver(&b).unwrap();
        t.hold(h, b).unwrap();
        assert_eq!((t.held(), p.free_count()), (1, 1));
        let mut seen = [0u8; 2];
        t.with(h, &mut |d| seen.copy_from_slice(d)).unwrap();
        assert_eq!(&seen, b"xy");
        t.release(h).unwrap();
        assert_eq!((t.held(), p.free_count()), (0, 2));
        assert_eq!(t.release(h), Err(Error::InvalidArgument));
        assert_eq!(t.with(h, &mut |_| ()), Err(Error::InvalidArgument));
        assert_eq!(t.double_releases(), 1);
    }

    #[test]
    fn a_stale_handle_cannot_release_the_slots_next_delivery() {
        let p = MsgPool::new(1, 8).unwrap();
        let t = HoldTable::new(1);
        let b = p.alloc().unwrap();
        // Delivered, released at once by the callback: its handle is never held.
        let first = t.deliver(&b).unwrap();
        drop(b);
        let b = p.alloc().unwrap();
        let second = t.deliver(&b).unwrap();
        t.hold(second, b).unwrap();
        assert_eq!(t.release(first), Err(Error::InvalidArgument));
        assert_eq!(t.held(), 1, "the newer hold survives a stale release");
        assert_eq!(
            t.hold(first, p.get(0).unwrap()),
            Err(Error::InvalidArgument)
        );
        t.release(second).unwrap();
        assert_eq!(p.free_count(), 1);
    }

    #[test]
    fn poll_shows_in_order_holds_and_releases() {
        let p = MsgPool::new(4, 8).unwrap();
        let t = HoldTable::new(4);
        let mut q: alloc::collections::VecDeque<(u32, PoolBuf)> = (0..4u8)
            .map(|i| {
                let b = p.alloc().unwrap();
                b.write(&[i]).unwrap();
                (100 + u32::from(i), b)
            })
            .collect();
        let mut seen = alloc::vec::Vec::new();
        let mut freed = alloc::vec::Vec::new();
        let mut held = alloc::vec::Vec::new();
        let n = t
            .poll(
                3,
                &mut || Ok(q.pop_front()),
                &mut |rx| {
                    seen.push((rx.src, rx.data[0]));
                    if rx.data[0] % 2 == 0 {
                        held.push(rx.hold);
                        RxAction::Hold
                    } else {
                        RxAction::Release
                    }
                },
                &mut |idx| freed.push(idx),
            )
            .unwrap();
        assert_eq!(n, 3, "the budget bounds the deliveries");
        assert_eq!(seen, [(100, 0), (101, 1), (102, 2)]);
        assert_eq!(freed, [1]);
        assert_eq!((t.held(), p.free_count(), q.len()), (2, 1, 1));
        for h in held {
            t.release(h).unwrap();
        }
        assert_eq!(p.free_count(), 3);
    }

    #[test]
    fn release_all_frees_and_stales_everything() {
        let p = MsgPool::new(3, 8).unwrap();
        let t = HoldTable::new(3);
        let hs: alloc::vec::Vec<_> = (0..3)
            .map(|_| {
                let b = p.alloc().unwrap();
                let h = t.deliver(&b).unwrap();
                t.hold(h, b).unwrap();
                h
            })
            .collect();
        assert_eq!(p.free_count(), 0);
        t.release_all();
        assert_eq!((t.held(), p.free_count()), (0, 3));
        for h in hs {
            assert!(t.release(h).is_err());
        }
        assert_eq!(t.double_releases(), 3);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::MsgPool;

    /// Two threads release the same handle: exactly one succeeds, the other is refused and
    /// counted, and the buffer goes back to its pool exactly once.
    #[test]
    fn racing_releases_free_once() {
        loom::model(|| {
            let p = MsgPool::new(1, 4).unwrap();
            let t = alloc::sync::Arc::new(HoldTable::new(1));
            let b = p.alloc().unwrap();
            let h = t.deliver(&b).unwrap();
            t.hold(h, b).unwrap();
            let t2 = t.clone();
            let th = loom::thread::spawn(move || t2.release(h).is_ok());
            let mine = t.release(h).is_ok();
            let theirs = th.join().unwrap();
            assert!(mine ^ theirs, "exactly one release wins");
            assert_eq!((t.held(), t.double_releases()), (0, 1));
            assert_eq!(p.free_count(), 1);
        });
    }
}
