//! A simulated rpmsg-like datagram link. AP → DSP datagrams queue for the DSP thread; DSP → AP
//! datagrams either call the AP's rx callback directly (interrupt mode, like an rpmsg callback)
//! or queue for the AP to pull (polled mode).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::{FastRpcError, Result};
use crate::packet::PacketChannel;

type RxFn = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The longest datagram a slot holds whole. Every datagram of the protocol is shorter (the
/// longest, a request, is 40 bytes), and so is every receiver's buffer (the AP's 64, the DSP's
/// 41): a longer datagram (hostile input) keeps its first `SLOT_BYTES` bytes and its whole
/// length, and arrives cut as it would have from a whole copy.
const SLOT_BYTES: usize = 64;

/// Datagrams a direction holds at once; a send to a full direction is dropped (AP → DSP:
/// `Busy`), as a link without free buffers would. The AP has at most a few dozen calls in
/// flight.
const SLOTS: usize = 256;

/// One queued datagram, its bytes inline: the consumer reads the datagram from the ring's own
/// cache line, not from a heap buffer behind it.
#[derive(Clone, Copy)]
struct Slot {
    len: usize,
    data: [u8; SLOT_BYTES],
}

/// The datagrams of one direction: a fixed ring, allocated once (the steady state allocates
/// nothing), under one lock.
struct Queue {
    slots: Box<[Slot]>,
    head: usize,
    count: usize,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            slots: vec![
                Slot {
                    len: 0,
                    data: [0; SLOT_BYTES],
                };
                SLOTS
            ]
            .into_boxed_slice(),
            head: 0,
            count: 0,
        }
    }
}

impl Queue {
    /// Queue `bytes` (its first [`SLOT_BYTES`] and its length); `false` when full. `len` is
    /// the queue's length hint, stored after the push.
    fn push(&mut self, bytes: &[u8], len: &AtomicUsize) -> bool {
        if self.count == self.slots.len() {
            return false;
        }
        let i = (self.head + self.count) % self.slots.len();
        let slot = &mut self.slots[i];
        let n = bytes.len().min(SLOT_BYTES);
        slot.data[..n].copy_from_slice(&bytes[..n]);
        slot.len = bytes.len();
        self.count += 1;
        // Relaxed: a hint read without the lock (`dsp_try_recv_into`, `try_recv`), kept under
        // it; the datagram itself is published by the lock's release.
        len.store(self.count, Ordering::Relaxed);
        true
    }

    /// Copy the next datagram into `out`; its whole length (more than `out.len()` if it was
    /// cut). `len` as in [`Queue::push`].
    fn pop_into(&mut self, out: &mut [u8], len: &AtomicUsize) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let slot = &self.slots[self.head];
        let n = slot.len.min(SLOT_BYTES).min(out.len());
        out[..n].copy_from_slice(&slot.data[..n]);
        let whole = slot.len;
        self.head = (self.head + 1) % self.slots.len();
        self.count -= 1;
        // Relaxed: as in `push`.
        len.store(self.count, Ordering::Relaxed);
        Some(whole)
    }

    /// Drop every queued datagram. `len` as in [`Queue::push`].
    fn clear(&mut self, len: &AtomicUsize) {
        self.head = 0;
        self.count = 0;
        // Relaxed: as in `push`.
        len.store(0, Ordering::Relaxed);
    }
}

/// Both ends of the link.
#[derive(Default)]
pub struct SimLink {
    to_dsp: Mutex<Queue>,
    to_dsp_cv: Condvar,
    /// A spin lock (held for a queue's push or pop and a copy of one datagram): one
    /// read-modify-write per uncontended pass where a `std` mutex's release is a second. The
    /// AP → DSP queue keeps a `std` mutex for its condition variable.
    to_ap: spin::Mutex<Queue>,
    push: Mutex<Option<RxFn>>,
    /// Whether `push` holds a callback; set and cleared with it, read without the lock by
    /// [`SimLink::dsp_send`].
    pushing: AtomicBool,
    closed: AtomicBool,
    /// The DSP thread waits in [`SimLink::dsp_recv_into`]; changed and read under the `to_dsp`
    /// lock.
    dsp_waiting: AtomicBool,
    /// Datagrams in `to_dsp` and `to_ap` (written under their locks, read without them as a
    /// hint).
    to_dsp_len: AtomicUsize,
    to_ap_len: AtomicUsize,
}

impl SimLink {
    /// A new link (polled until [`SimLink::set_push`]).
    pub fn new() -> Arc<Self> {
        Arc::new(SimLink::default())
    }

    /// Deliver DSP → AP datagrams by calling `f` (interrupt mode).
    pub fn set_push(&self, f: impl Fn(&[u8]) + Send + Sync + 'static) {
        *self.push.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
        // Release: pairs with the Acquire in `dsp_send`; the callback itself is read under
        // the lock.
        self.pushing.store(true, Ordering::Release);
    }

    /// Close the link: AP sends fail with `ChannelDown`, the DSP thread's receive returns.
    pub fn close(&self) {
        // Release: publishes the closed state to senders and the DSP thread.
        self.closed.store(true, Ordering::Release);
        *self.push.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Relaxed: `closed` above already stops `dsp_send`.
        self.pushing.store(false, Ordering::Relaxed);
        self.to_dsp_cv.notify_all();
    }

    /// Drop every datagram queued either way: the DSP side restarted
    /// ([`SimDsp::reset`](crate::sim::SimDsp::reset)), and a restarted remote neither reads
    /// the requests sent to the instance before it nor delivers that instance's answers (the
    /// channel they travelled on is gone with it).
    pub fn clear(&self) {
        self.to_dsp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear(&self.to_dsp_len);
        self.to_ap.lock().clear(&self.to_ap_len);
    }

    /// DSP side: copy the next AP datagram into `out`, waiting at most `t` for one; its whole
    /// length, which is more than `out.len()` if it was cut.
    pub fn dsp_recv_into(&self, out: &mut [u8], t: Duration) -> Option<usize> {
        let mut q = self.to_dsp.lock().unwrap_or_else(|p| p.into_inner());
        if q.count == 0 {
            // Relaxed: changed and read under the `to_dsp` lock (held here; released only
            // inside the wait), which orders it against `send`.
            self.dsp_waiting.store(true, Ordering::Relaxed);
            q = self
                .to_dsp_cv
                .wait_timeout(q, t)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            // Relaxed: as above (the lock is held again).
            self.dsp_waiting.store(false, Ordering::Relaxed);
        }
        q.pop_into(out, &self.to_dsp_len)
    }

    /// DSP side: copy the next AP datagram, if one is queued, into `out` (no wait); its whole
    /// length, which is more than `out.len()` if it was cut.
    pub fn dsp_try_recv_into(&self, out: &mut [u8]) -> Option<usize> {
        // Relaxed: a hint that spares a spinning DSP the lock (a locked access on every turn
        // takes the line from the AP); the queue itself is read under the lock.
        if self.to_dsp_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.to_dsp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_into(out, &self.to_dsp_len)
    }

    /// DSP side: send a datagram to the AP.
    pub fn dsp_send(&self, bytes: &[u8]) {
        // Acquire: pairs with `close`.
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        // Acquire: pairs with `set_push`. A polled link never takes the callback's lock.
        let push = if self.pushing.load(Ordering::Acquire) {
            self.push.lock().unwrap_or_else(|p| p.into_inner()).clone()
        } else {
            None
        };
        match push {
            Some(f) => f(bytes),
            None => {
                if !self.to_ap.lock().push(bytes, &self.to_ap_len) {
                    log::warn!("sim link: DSP → AP queue full, datagram dropped");
                }
            }
        }
    }
}

impl PacketChannel for SimLink {
    fn send(&self, msg: &[u8]) -> Result<()> {
        // Acquire: pairs with `close`.
        if self.closed.load(Ordering::Acquire) {
            return Err(FastRpcError::ChannelDown);
        }
        let mut q = self.to_dsp.lock().unwrap_or_else(|p| p.into_inner());
        if !q.push(msg, &self.to_dsp_len) {
            return Err(FastRpcError::Busy);
        }
        // A wake-up is a system call: only when the DSP thread waits for a datagram.
        // Relaxed: read under the `to_dsp` lock (see `dsp_recv_into`).
        let waiting = self.dsp_waiting.load(Ordering::Relaxed);
        drop(q);
        if waiting {
            self.to_dsp_cv.notify_one();
        }
        Ok(())
    }

    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        // Relaxed: a hint that spares a polling AP the lock while nothing is queued (the DSP
        // pushes under it); the queue itself is read under the lock.
        if self.to_ap_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.to_ap.lock().pop_into(buf, &self.to_ap_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring wraps, keeps order, refuses a push when full (the AP's send is `Busy`), and a
    /// datagram longer than a slot arrives cut with its whole length, as a receiver with a
    /// shorter buffer would see it from a whole copy.
    #[test]
    fn ring_keeps_order_across_the_wrap_refuses_when_full_and_cuts_long_datagrams() {
        let link = SimLink::new();
        let mut out = [0u8; SLOT_BYTES + 8];
        for round in 0..3u8 {
            for i in 0..SLOTS {
                link.send(&[round, i as u8, 7]).unwrap();
            }
            assert_eq!(link.send(&[0]), Err(FastRpcError::Busy), "full");
            for i in 0..SLOTS {
                assert_eq!(link.dsp_try_recv_into(&mut out), Some(3));
                assert_eq!(out[..3], [round, i as u8, 7]);
            }
            assert_eq!(link.dsp_try_recv_into(&mut out), None);
        }
        let long: Vec<u8> = (0..SLOT_BYTES as u8 + 20).collect();
        link.dsp_send(&long);
        assert_eq!(link.try_recv(&mut out), Some(long.len()));
        assert_eq!(out[..SLOT_BYTES], long[..SLOT_BYTES]);
        let mut short = [0u8; 8];
        link.dsp_send(&long[..20]);
        assert_eq!(link.try_recv(&mut short), Some(20), "cut to the buffer");
        assert_eq!(short, long[..8]);
        assert_eq!(link.try_recv(&mut out), None);
    }

    /// A cleared link has nothing queued either way, and carries datagrams again after it.
    #[test]
    fn clear_drops_what_is_queued_both_ways() {
        let link = SimLink::new();
        let mut out = [0u8; 8];
        link.send(&[1]).unwrap();
        link.dsp_send(&[2]);
        link.clear();
        assert_eq!(link.dsp_try_recv_into(&mut out), None);
        assert_eq!(link.try_recv(&mut out), None);
        link.send(&[3]).unwrap();
        assert_eq!(link.dsp_try_recv_into(&mut out), Some(1));
        assert_eq!(out[0], 3);
    }
}
