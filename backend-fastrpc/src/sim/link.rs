//! A simulated rpmsg-like datagram link. AP → DSP datagrams queue for the DSP thread; DSP → AP
//! datagrams either call the AP's rx callback directly (interrupt mode, like an rpmsg callback)
//! or queue for the AP to pull (polled mode).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::{FastRpcError, Result};
use crate::packet::PacketChannel;

type RxFn = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The datagrams of one direction, with the spent buffers the next ones reuse (the steady
/// state allocates nothing; at most [`SPARE_MAX`] are kept), under one lock.
#[derive(Default)]
struct Queue {
    q: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl Queue {
    /// Queue a copy of `bytes` in a spent buffer when there is one.
    fn push(&mut self, bytes: &[u8]) {
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(bytes);
        self.q.push_back(v);
    }

    /// Copy the next datagram into `out` and keep its buffer; its whole length (more than
    /// `out.len()` if it was cut). `len` is the queue's length hint, stored after the pop.
    fn pop_into(&mut self, out: &mut [u8], len: &AtomicUsize) -> Option<usize> {
        let d = self.q.pop_front();
        // Relaxed: a hint read without the lock (`dsp_try_recv`, `try_recv`), kept under it.
        len.store(self.q.len(), Ordering::Relaxed);
        let d = d?;
        let n = d.len().min(out.len());
        out[..n].copy_from_slice(&d[..n]);
        let whole = d.len();
        self.keep(d);
        Some(whole)
    }

    /// Keep a spent buffer for a later datagram, if there is room.
    fn keep(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_MAX {
            self.spare.push(buf);
        }
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
    /// The DSP thread waits in [`SimLink::dsp_recv`]; changed and read under the `to_dsp` lock.
    dsp_waiting: AtomicBool,
    /// Datagrams in `to_dsp` and `to_ap` (written under their locks, read without them as a
    /// hint).
    to_dsp_len: AtomicUsize,
    to_ap_len: AtomicUsize,
}

/// Spent datagram buffers kept for reuse.
const SPARE_MAX: usize = 64;

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

    /// DSP side: the next AP datagram, waiting at most `t`.
    pub fn dsp_recv(&self, t: Duration) -> Option<Vec<u8>> {
        let mut q = self.to_dsp.lock().unwrap_or_else(|p| p.into_inner());
        if q.q.is_empty() {
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
        let d = q.q.pop_front();
        // Relaxed: a hint (see `dsp_try_recv`), kept under the lock.
        self.to_dsp_len.store(q.q.len(), Ordering::Relaxed);
        d
    }

    /// DSP side: the next AP datagram, if one is queued (no wait).
    pub fn dsp_try_recv(&self) -> Option<Vec<u8>> {
        // Relaxed: a hint that spares a spinning DSP the lock (a locked access on every turn
        // takes the line from the AP); the queue itself is read under the lock.
        if self.to_dsp_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut q = self.to_dsp.lock().unwrap_or_else(|p| p.into_inner());
        let d = q.q.pop_front();
        // Relaxed: as above, kept under the lock.
        self.to_dsp_len.store(q.q.len(), Ordering::Relaxed);
        d
    }

    /// DSP side: copy the next AP datagram, if one is queued, into `out` (no wait) and keep its
    /// buffer for reuse under the same lock; returns its whole length, which is more than
    /// `out.len()` if it was cut.
    pub fn dsp_try_recv_into(&self, out: &mut [u8]) -> Option<usize> {
        // Relaxed: as in `dsp_try_recv`.
        if self.to_dsp_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.to_dsp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_into(out, &self.to_dsp_len)
    }

    /// Give a datagram buffer back for reuse (after [`SimLink::dsp_recv`] or
    /// [`SimLink::dsp_try_recv`]).
    pub fn recycle(&self, buf: Vec<u8>) {
        self.to_dsp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keep(buf);
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
                let mut q = self.to_ap.lock();
                q.push(bytes);
                // Relaxed: a hint (see `try_recv`), kept under the lock.
                self.to_ap_len.store(q.q.len(), Ordering::Relaxed);
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
        q.push(msg);
        // Relaxed: a hint for a spinning DSP (see `dsp_try_recv`), kept under the lock.
        self.to_dsp_len.store(q.q.len(), Ordering::Relaxed);
        // A wake-up is a system call: only when the DSP thread waits for a datagram.
        // Relaxed: read under the `to_dsp` lock (see `dsp_recv`).
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
