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

/// Both ends of the link.
#[derive(Default)]
pub struct SimLink {
    to_dsp: Mutex<VecDeque<Vec<u8>>>,
    to_dsp_cv: Condvar,
    to_ap: Mutex<VecDeque<Vec<u8>>>,
    push: Mutex<Option<RxFn>>,
    closed: AtomicBool,
    /// Spent datagram buffers, reused for the next datagram either way (the steady state
    /// allocates nothing); at most [`SPARE_MAX`] are kept.
    spare: Mutex<Vec<Vec<u8>>>,
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
    }

    /// Close the link: AP sends fail with `ChannelDown`, the DSP thread's receive returns.
    pub fn close(&self) {
        // Release: publishes the closed state to senders and the DSP thread.
        self.closed.store(true, Ordering::Release);
        *self.push.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.to_dsp_cv.notify_all();
    }

    /// DSP side: the next AP datagram, waiting at most `t`.
    pub fn dsp_recv(&self, t: Duration) -> Option<Vec<u8>> {
        let mut q = self.to_dsp.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() {
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
        let d = q.pop_front();
        // Relaxed: a hint (see `dsp_try_recv`), kept under the lock.
        self.to_dsp_len.store(q.len(), Ordering::Relaxed);
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
        let d = q.pop_front();
        // Relaxed: as above, kept under the lock.
        self.to_dsp_len.store(q.len(), Ordering::Relaxed);
        d
    }

    /// Give a datagram buffer back for reuse (after [`SimLink::dsp_recv`] or
    /// [`SimLink::dsp_try_recv`]).
    pub fn recycle(&self, mut buf: Vec<u8>) {
        let mut s = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() < SPARE_MAX {
            buf.clear();
            s.push(buf);
        }
    }

    /// A buffer holding `bytes`, reusing a spent one when there is one.
    fn datagram(&self, bytes: &[u8]) -> Vec<u8> {
        let mut v = self
            .spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        v.extend_from_slice(bytes);
        v
    }

    /// DSP side: send a datagram to the AP.
    pub fn dsp_send(&self, bytes: &[u8]) {
        // Acquire: pairs with `close`.
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let push = self.push.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match push {
            Some(f) => f(bytes),
            None => {
                let d = self.datagram(bytes);
                let mut q = self.to_ap.lock().unwrap_or_else(|p| p.into_inner());
                q.push_back(d);
                // Relaxed: a hint (see `try_recv`), kept under the lock.
                self.to_ap_len.store(q.len(), Ordering::Relaxed);
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
        let d = self.datagram(msg);
        let mut q = self.to_dsp.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(d);
        // Relaxed: a hint for a spinning DSP (see `dsp_try_recv`), kept under the lock.
        self.to_dsp_len.store(q.len(), Ordering::Relaxed);
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
        let m = {
            let mut q = self.to_ap.lock().unwrap_or_else(|p| p.into_inner());
            let m = q.pop_front();
            // Relaxed: as above, kept under the lock.
            self.to_ap_len.store(q.len(), Ordering::Relaxed);
            m?
        };
        let n = m.len().min(buf.len());
        buf[..n].copy_from_slice(&m[..n]);
        let len = m.len();
        self.recycle(m);
        Some(len)
    }
}
