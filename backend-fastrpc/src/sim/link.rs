//! A simulated rpmsg-like datagram link. AP → DSP datagrams queue for the DSP thread; DSP → AP
//! datagrams either call the AP's rx callback directly (interrupt mode, like an rpmsg callback)
//! or queue for the AP to pull (polled mode).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use fwipc_transport_api::fixture::{RemoteWake, SlotQueue};

use crate::error::{FastRpcError, Result};
use crate::packet::PacketChannel;

type RxFn = Box<dyn Fn(&[u8]) + Send + Sync>;

/// The longest datagram a slot holds whole. Every datagram of the protocol is shorter (the
/// longest, a request, is 40 bytes), and so is every receiver's buffer (the AP's 64, the DSP's
/// 41): a longer datagram (hostile input) keeps its first `SLOT_BYTES` bytes and its whole
/// length, and arrives cut as it would have from a whole copy.
const SLOT_BYTES: usize = 64;

/// Datagrams a direction holds at once; a send to a full direction is dropped (AP → DSP:
/// `Busy`), as a link without free buffers would. The AP has at most a few dozen calls in
/// flight.
const SLOTS: usize = 256;

/// One queued datagram, its bytes inline: the consumer reads the datagram from the queue's own
/// slot, not from a heap buffer behind it. `repr(C)`, the length first: in the queue's slot the
/// length comes right after the slot's stamp and the bytes right after it, so a datagram of up
/// to 48 bytes (every datagram of the protocol) shares one cache line with both. Left to the
/// compiler, the length went after the 64 bytes, on a line of its own: two lines moved per
/// datagram instead of one (docs/benchmarks.md, "Cache lines per round trip").
#[repr(C)]
struct Slot {
    len: usize,
    data: [u8; SLOT_BYTES],
}

// The layout the docs above rely on.
const _: () = assert!(core::mem::offset_of!(Slot, len) == 0);
const _: () = assert!(core::mem::offset_of!(Slot, data) == core::mem::size_of::<usize>());

impl Default for Slot {
    fn default() -> Self {
        Slot {
            len: 0,
            data: [0; SLOT_BYTES],
        }
    }
}

/// Queue `bytes` (its first [`SLOT_BYTES`] and its length) in `q`, written in its slot;
/// `false` when full.
fn queue_datagram(q: &SlotQueue<Slot>, bytes: &[u8]) -> bool {
    q.push_with(|slot| {
        let n = bytes.len().min(SLOT_BYTES);
        slot.data[..n].copy_from_slice(&bytes[..n]);
        slot.len = bytes.len();
    })
}

/// Copy the next datagram of `q` into `out`, read in its slot; its whole length (more than
/// `out.len()` if it was cut).
fn take_datagram(q: &SlotQueue<Slot>, out: &mut [u8]) -> Option<usize> {
    q.pop_with(|slot| {
        let n = slot.len.min(SLOT_BYTES).min(out.len());
        out[..n].copy_from_slice(&slot.data[..n]);
        slot.len
    })
}

/// Both ends of the link: one [`SlotQueue`] of fixed slots each way, allocated once (the steady
/// state allocates nothing).
pub struct SimLink {
    to_dsp: SlotQueue<Slot>,
    to_ap: SlotQueue<Slot>,
    /// The DSP thread ([`SimLink::set_dsp_thread`]): woken by every AP send while it may park
    /// (`SimMode::Normal`; [`RemoteWake`]).
    dsp: RemoteWake,
    /// The AP's rx callback (interrupt mode), set once: [`SimLink::dsp_send`] reads it with
    /// one Acquire load, no lock and no reference count per datagram.
    push: OnceLock<RxFn>,
    closed: AtomicBool,
}

impl SimLink {
    /// A new link (polled until [`SimLink::set_push`]).
    pub fn new() -> Arc<Self> {
        Arc::new(SimLink {
            to_dsp: SlotQueue::with_capacity(SLOTS),
            to_ap: SlotQueue::with_capacity(SLOTS),
            dsp: RemoteWake::new(),
            push: OnceLock::new(),
            closed: AtomicBool::new(false),
        })
    }

    /// The thread that waits in [`SimLink::dsp_recv_into`], woken by each AP send (set once,
    /// before the AP sends: `SimDsp::spawn` does).
    pub fn set_dsp_thread(&self, t: Thread) {
        if !self.dsp.set_thread(t) {
            log::warn!("sim link: the DSP thread is set already");
        }
    }

    /// What wakes the DSP thread: its loop takes each mode through it
    /// ([`SimModeSwitch::take_for`](fwipc_transport_api::fixture::SimModeSwitch::take_for)).
    pub fn dsp_wake(&self) -> &RemoteWake {
        &self.dsp
    }

    /// Deliver DSP → AP datagrams by calling `f` (interrupt mode). Once per link: a later
    /// call is ignored (the link keeps its first callback until it is dropped).
    pub fn set_push(&self, f: impl Fn(&[u8]) + Send + Sync + 'static) {
        if self.push.set(Box::new(f)).is_err() {
            log::warn!("sim link: rx callback already set, the new one ignored");
        }
    }

    /// Close the link: AP sends fail with `ChannelDown`, the DSP thread's receive returns.
    pub fn close(&self) {
        // Release: publishes the closed state to senders and the DSP thread.
        self.closed.store(true, Ordering::Release);
        self.dsp.wake();
    }

    /// Drop every datagram queued either way: the DSP side restarted
    /// ([`SimDsp::reset`](crate::sim::SimDsp::reset)), and a restarted remote neither reads
    /// the requests sent to the instance before it nor delivers that instance's answers (the
    /// channel they travelled on is gone with it).
    pub fn clear(&self) {
        self.to_dsp.clear();
        self.to_ap.clear();
    }

    /// DSP side, on the thread of [`SimLink::set_dsp_thread`]: copy the next AP datagram into
    /// `out`, waiting at most `t` for one; its whole length, which is more than `out.len()` if
    /// it was cut. (Another thread may call it too; it is then woken only by the timeout.)
    pub fn dsp_recv_into(&self, out: &mut [u8], t: Duration) -> Option<usize> {
        if let Some(n) = self.dsp_try_recv_into(out) {
            return Some(n);
        }
        // Acquire: pairs with `close`.
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        // A send after the look above unparks us, before or during the park (the token then
        // makes it return at once), and its push is visible after it: an unpark
        // synchronizes-with the park it ends.
        std::thread::park_timeout(t);
        self.dsp_try_recv_into(out)
    }

    /// DSP side: copy the next AP datagram, if one is queued, into `out` (no wait); its whole
    /// length, which is more than `out.len()` if it was cut. An empty queue costs a spinning
    /// DSP no lock and no write ([`SlotQueue`]: the look reads the next slot's stamp only).
    pub fn dsp_try_recv_into(&self, out: &mut [u8]) -> Option<usize> {
        take_datagram(&self.to_dsp, out)
    }

    /// DSP side: send a datagram to the AP.
    pub fn dsp_send(&self, bytes: &[u8]) {
        // Acquire: pairs with `close`.
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        // `OnceLock::get`: one Acquire load, pairing with `set_push`'s store of the callback.
        match self.push.get() {
            Some(f) => f(bytes),
            None => {
                if !queue_datagram(&self.to_ap, bytes) {
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
        if !queue_datagram(&self.to_dsp, msg) {
            return Err(FastRpcError::Busy);
        }
        self.dsp.wake();
        Ok(())
    }

    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        // An empty queue costs a polling AP no lock and no write (a look at the next slot's
        // stamp).
        take_datagram(&self.to_ap, buf)
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
