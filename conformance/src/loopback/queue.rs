//! The loopback's queues between the transport and the remote thread: a spin-locked
//! `VecDeque` with its length beside it, readable without the lock.
//!
//! Each side polls the queue the other side fills (the remote its requests, a polling caller its
//! replies). A poll that took the lock every turn would write the lock's cache line each time
//! and take it away from the producer, which then waits for the line to come back before it can
//! push: in the two-thread benchmark with a spinning remote (docs/benchmarks.md, (b)) that
//! doubled the round trip. An empty poll here only reads the length, which stays shared in both
//! caches until the producer writes it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;

/// A bounded FIFO with a lock-free emptiness check.
pub(crate) struct Queue<T> {
    q: Mutex<VecDeque<T>>,
    /// `q.len()`, stored under the lock whenever it changes; read without it as a hint.
    len: AtomicUsize,
    cap: usize,
}

impl<T> Queue<T> {
    /// An empty queue holding at most `cap` items (allocated here, never grown).
    pub(crate) fn with_capacity(cap: usize) -> Self {
        Queue {
            q: Mutex::new(VecDeque::with_capacity(cap)),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    /// Append `v`; `false` (and `v` dropped) when the queue is full.
    pub(crate) fn push(&self, v: T) -> bool {
        let mut q = self.q.lock();
        if q.len() == self.cap {
            return false;
        }
        q.push_back(v);
        // Relaxed: a hint; the item itself is published by the lock's release, and a reader
        // that sees the new length takes the lock before it looks at the item.
        self.len.store(q.len(), Ordering::Relaxed);
        true
    }

    /// The oldest item and whether another is queued behind it; `None` without taking the lock
    /// when the queue looks empty. A push that this look misses is found by the next one: the
    /// pushing thread's own later look sees its store, and every other thread polls again, or is
    /// woken by the pusher (an unpark, which orders the store before the wake).
    pub(crate) fn pop(&self) -> Option<(T, bool)> {
        // Relaxed: a hint, see above.
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut q = self.q.lock();
        let v = q.pop_front()?;
        // Relaxed: as in `push`.
        self.len.store(q.len(), Ordering::Relaxed);
        Some((v, !q.is_empty()))
    }

    /// Drop every queued item.
    pub(crate) fn clear(&self) {
        let mut q = self.q.lock();
        q.clear();
        // Relaxed: as in `push`.
        self.len.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_bounded_and_the_hint_follows_every_change() {
        let q = Queue::with_capacity(2);
        assert!(q.pop().is_none());
        assert!(q.push(1) && q.push(2));
        assert!(!q.push(3), "full");
        assert_eq!(q.len.load(Ordering::Relaxed), 2);
        assert_eq!(q.pop(), Some((1, true)));
        assert_eq!(q.pop(), Some((2, false)));
        assert_eq!(q.len.load(Ordering::Relaxed), 0);
        assert!(q.pop().is_none());
        assert!(q.push(4));
        q.clear();
        assert!(q.pop().is_none());
        assert!(q.push(5));
        assert_eq!(q.pop(), Some((5, false)));
    }

    /// Every item pushed on one thread is popped on another, in order, by a consumer that only
    /// polls (the case the hint must not break).
    #[test]
    fn a_polling_consumer_gets_every_item_in_order() {
        const N: u32 = 20_000;
        let q = std::sync::Arc::new(Queue::with_capacity(8));
        let p = q.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                while !p.push(i) {
                    std::hint::spin_loop();
                }
            }
        });
        let mut next = 0;
        while next < N {
            if let Some((v, _)) = q.pop() {
                assert_eq!(v, next);
                next += 1;
            }
        }
        producer.join().unwrap();
        assert!(q.pop().is_none());
    }
}
