//! [`Datagram`] for [`VchiqTransport`]: VCHIQ messages are one-way by nature; this exposes them,
//! and the core's RX hold/release (a handler's [`Deliver::Hold`] and
//! [`Vchiq::release_message`], docs/protocols/vchiq.md §1), beside the request/reply calls.
//! docs/datagram.md describes the model.
//!
//! The endpoint is the transport's service: one endpoint, at the service's fourcc, on either
//! side. A one-way message is a frame whose token has the [`NOTIFY`] bit (no reply is expected or
//! matched). While the endpoint is bound, such frames from the remote are datagrams instead of
//! notifications: each is copied out of the remote's slot into a buffer of a receive pool of
//! [`DGRAM_RX_BUFS`] (the slot is remote-writable; no slice of it is handed out) and its slot
//! message stays *claimed* in the core until the user releases the datagram. With every receive
//! buffer taken, the handler answers [`Deliver::Retry`]: the core stops parsing the remote's
//! stream until a release kicks it, the remote's slots fill, and its sends fail with `Retry`
//! (back-pressure; nothing is lost). The service's replies wait behind the stall too.
//!
//! No zero-copy send: a VCHIQ message is copied into our transmit slot by the core, so a loaned
//! pool buffer would be copied anyway.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use fwipc_transport_api::{
    Bind, Datagram, DatagramStats, Endpoint, Error, HoldTable, MsgPool, PoolBuf, Result, Rx,
    RxAction, RxHold,
};
use spin::Mutex;
use zerocopy::IntoBytes;

use super::VchiqTransport;
use crate::engine::service::{Deliver, Message, MessageToken};
use crate::wire::frame::{self, FrameHeader, MAX_FRAME_PAYLOAD, NOTIFY};
use crate::Vchiq;

/// Receive buffers for the datagram endpoint: datagrams that can wait for (or be held by) the
/// user before the core stops taking the remote's messages.
pub const DGRAM_RX_BUFS: usize = 16;

struct Ep {
    generation: u32,
    bound: bool,
    queue: VecDeque<(PoolBuf, MessageToken)>,
}

/// The datagram state of a transport's service handler.
pub(crate) struct DgramSide {
    fourcc: u32,
    rx_pool: MsgPool,
    holds: HoldTable,
    /// The core's claim of each held receive buffer's message, by buffer index.
    claims: Mutex<Vec<Option<MessageToken>>>,
    ep: Mutex<Ep>,
    seq: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    backpressure: AtomicU64,
    dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    // Relaxed: statistics counter only.
    c.fetch_add(1, Ordering::Relaxed);
}

impl DgramSide {
    pub(crate) fn new(fourcc: u32) -> Result<Self> {
        Ok(DgramSide {
            fourcc,
            rx_pool: MsgPool::new(DGRAM_RX_BUFS, MAX_FRAME_PAYLOAD)?,
            holds: HoldTable::new(DGRAM_RX_BUFS),
            claims: Mutex::new(alloc::vec![None; DGRAM_RX_BUFS]),
            ep: Mutex::new(Ep {
                generation: 0,
                bound: false,
                queue: VecDeque::with_capacity(DGRAM_RX_BUFS),
            }),
            seq: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            backpressure: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// The service handler's first look at a message: `Some` if it is a datagram for the bound
    /// endpoint (queued and claimed, or refused for now), `None` to handle it as a reply or
    /// notification.
    pub(crate) fn offer(&self, m: &Message<'_>) -> Option<Deliver> {
        let (h, rest) = frame::split(m.payload()).ok()?;
        if h.token & NOTIFY == 0 {
            return None;
        }
        let mut ep = self.ep.lock();
        if !ep.bound {
            return None;
        }
        let Ok(body) = frame::payload(&h, rest) else {
            bump(&self.dropped);
            return Some(Deliver::Done);
        };
        let Ok(buf) = self.rx_pool.alloc() else {
            // Every receive buffer is queued or held: leave the message in the remote's slot.
            bump(&self.backpressure);
            return Some(Deliver::Retry);
        };
        if buf.write(body).is_err() {
            bump(&self.dropped);
            return Some(Deliver::Done);
        }
        ep.queue.push_back((buf, m.token()));
        bump(&self.received);
        Some(Deliver::Hold)
    }

    fn check(&self, ep: &Endpoint) -> Result<()> {
        let e = self.ep.lock();
        if e.bound && e.generation == ep.generation() && ep.index() == 0 {
            Ok(())
        } else {
            Err(Error::InvalidArgument)
        }
    }

    /// Give the core back the claim of receive buffer `idx`'s message and let it parse again.
    fn unclaim(&self, vchiq: &Vchiq, idx: u32) {
        let t = self
            .claims
            .lock()
            .get_mut(idx as usize)
            .and_then(Option::take);
        if let Some(t) = t {
            // `Invalid` once the service was closed under it (the claim went with the slot).
            let _ = vchiq.release_message(t);
        }
        vchiq.kick();
    }
}

impl VchiqTransport {
    /// Shutdown: give back every queued and held datagram (and its claim in the core).
    pub(crate) fn dgram_reset(&self) {
        let d = &self.sh.dgram;
        let queued: Vec<_> = {
            let mut ep = d.ep.lock();
            ep.bound = false;
            ep.queue.drain(..).collect()
        };
        for (buf, t) in queued {
            let _ = self.vchiq.release_message(t);
            drop(buf);
        }
        let claims: Vec<MessageToken> = d
            .claims
            .lock()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for t in claims {
            let _ = self.vchiq.release_message(t);
        }
        d.holds.release_all();
    }
}

impl Datagram for VchiqTransport {
    fn bind(&self, how: Bind<'_>) -> Result<Endpoint> {
        let _u = self.sh.lifecycle.acquire()?;
        let d = &self.sh.dgram;
        match how {
            Bind::Any => {}
            Bind::Addr(a) if a == d.fourcc => {}
            Bind::Addr(_) => return Err(Error::InvalidArgument),
            Bind::Name(_) => return Err(Error::NotSupported),
        }
        let mut ep = d.ep.lock();
        if ep.bound {
            return Err(Error::Busy);
        }
        ep.generation = ep.generation.wrapping_add(1);
        ep.bound = true;
        Ok(Endpoint::new(0, ep.generation, d.fourcc))
    }

    fn unbind(&self, ep: Endpoint) -> Result<()> {
        let d = &self.sh.dgram;
        d.check(&ep)?;
        let queued: Vec<_> = {
            let mut e = d.ep.lock();
            e.bound = false;
            e.queue.drain(..).collect()
        };
        for (buf, t) in queued {
            let _ = self.vchiq.release_message(t);
            drop(buf);
        }
        self.vchiq.kick();
        Ok(())
    }

    fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()> {
        let _u = self.sh.lifecycle.acquire()?;
        let d = &self.sh.dgram;
        d.check(ep)?;
        if dst != d.fourcc {
            return Err(Error::InvalidArgument);
        }
        if payload.len() > MAX_FRAME_PAYLOAD {
            return Err(Error::TooLarge);
        }
        let h = self.open_handle()?;
        // Relaxed: a sequence number for the remote's logs, not a publication.
        let seq = d.seq.fetch_add(1, Ordering::Relaxed) as u32 & !NOTIFY;
        let hdr = FrameHeader {
            token: NOTIFY | seq,
            len: payload.len() as u32,
        };
        self.vchiq
            .queue_message_parts(h, &[hdr.as_bytes(), payload])
            .map_err(Error::from)?;
        bump(&d.sent);
        Ok(())
    }

    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize> {
        let d = &self.sh.dgram;
        d.check(ep)?;
        if self.completion == fwipc_transport_api::Completion::Polled {
            self.vchiq.poll();
        }
        let mut n = 0;
        while n < budget {
            let next = {
                let mut e = d.ep.lock();
                if !e.bound || e.generation != ep.generation() {
                    return Err(Error::InvalidArgument);
                }
                e.queue.pop_front()
            };
            let Some((buf, token)) = next else { break };
            let idx = buf.index();
            let hold = d.holds.deliver(&buf)?;
            let len = buf.len();
            // No lock of ours is held while the callback runs, except this buffer's own.
            let action = buf.with(|b| {
                f(Rx {
                    src: d.fourcc,
                    data: &b[..len],
                    hold,
                })
            });
            if let Some(c) = d.claims.lock().get_mut(idx as usize) {
                *c = Some(token);
            }
            match action {
                RxAction::Hold => d.holds.hold(hold, buf)?,
                RxAction::Release => {
                    drop(buf);
                    d.unclaim(&self.vchiq, idx);
                }
            }
            n += 1;
        }
        Ok(n)
    }

    fn with_held(&self, hold: RxHold, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.sh.dgram.holds.with(hold, f)
    }

    fn release_rx(&self, hold: RxHold) -> Result<()> {
        let d = &self.sh.dgram;
        d.holds.release(hold)?;
        d.unclaim(&self.vchiq, hold.slot());
        Ok(())
    }

    fn datagram_stats(&self) -> DatagramStats {
        let d = &self.sh.dgram;
        // Relaxed: statistics counters only.
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = DatagramStats::default();
        s.sent = r(&d.sent);
        s.received = r(&d.received);
        s.held = d.holds.held();
        s.double_releases = d.holds.double_releases();
        s.rx_backpressure = r(&d.backpressure);
        s.dropped = r(&d.dropped);
        s
    }
}
