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
//! Zero-copy send: [`Datagram::loan`] reserves room for one message in our own transmit slot
//! (`engine/tx_loan.rs`: just beyond the published `tx_pos`, where the remote never looks),
//! written in place through [`SharedTxBufs`] (the region's accessors, no Rust reference to the
//! slot) and published by [`Datagram::send_loan`] with its frame and VCHIQ headers. At most one
//! loan per instance, and while it is out every other sender of the instance is answered
//! `Retry`; a loan kept longer than [`SLOT_LOAN_LIFETIME`] is discarded by the next sender that
//! needs the slots (its writes are dropped, its send fails with `Timeout`). docs/datagram.md,
//! footnote (2), explains why a loan cannot let other messages pass it.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use fwipc_transport_api::{
    Bind, Counters, Datagram, DatagramCounters, DatagramStats, Endpoint, EndpointQueues, Error,
    HoldTable, MsgPool, Result, Rx, RxAction, RxHold, SharedTxBufs, TxLoan,
};
use spin::Mutex;
use zerocopy::IntoBytes;

use super::VchiqTransport;
use crate::engine::service::{Deliver, Message, MessageToken};
use crate::error::VchiqError;
use crate::wire::consts::VCHIQ_MAX_MSG_SIZE;
use crate::wire::frame::{self, FrameHeader, FRAME_HEADER, MAX_FRAME_PAYLOAD, NOTIFY};
use crate::Vchiq;

/// Receive buffers for the datagram endpoint: datagrams that can wait for (or be held by) the
/// user before the core stops taking the remote's messages.
pub const DGRAM_RX_BUFS: usize = 16;

/// How long a zero-copy loan may stay out before the next sender that needs the slots discards
/// it (every other sender of the instance waits meanwhile).
pub const SLOT_LOAN_LIFETIME: Duration = Duration::from_millis(100);

/// The loans of our transmit slot, as [`TxLoan`]s see them: buffer index = the core's loan
/// generation, bytes after the frame header. Holds the core weakly (the core holds the service
/// handler that holds this).
struct SlotLoans {
    vchiq: Weak<Vchiq>,
}

impl SharedTxBufs for SlotLoans {
    fn capacity(&self) -> usize {
        MAX_FRAME_PAYLOAD
    }

    fn write(&self, idx: u32, offset: usize, data: &[u8]) {
        // A loan that expired (or whose core is gone) takes no more bytes; its send fails.
        if let Some(v) = self.vchiq.upgrade() {
            let _ = v.loan_write(idx, FRAME_HEADER + offset, data);
        }
    }

    fn give_back(&self, idx: u32) {
        if let Some(v) = self.vchiq.upgrade() {
            v.loan_cancel(idx);
        }
    }
}

/// The datagram state of a transport's service handler.
pub(crate) struct DgramSide {
    fourcc: u32,
    rx_pool: MsgPool,
    holds: HoldTable,
    /// The core's claim of each queued or held receive buffer's message, by buffer index.
    claims: Mutex<Vec<Option<MessageToken>>>,
    /// One endpoint, at the fourcc.
    eps: EndpointQueues,
    seq: AtomicU32,
    counters: DatagramCounters,
    /// Loans of our transmit slot (one `Arc` for the transport's life: loaning allocates
    /// nothing).
    loans: Arc<SlotLoans>,
}

impl DgramSide {
    pub(crate) fn new(fourcc: u32, vchiq: &Arc<Vchiq>) -> Result<Self> {
        Ok(DgramSide {
            loans: Arc::new(SlotLoans {
                vchiq: Arc::downgrade(vchiq),
            }),
            fourcc,
            rx_pool: MsgPool::new(DGRAM_RX_BUFS, MAX_FRAME_PAYLOAD)?,
            holds: HoldTable::new(DGRAM_RX_BUFS),
            claims: Mutex::new(alloc::vec![None; DGRAM_RX_BUFS]),
            eps: EndpointQueues::new(1, DGRAM_RX_BUFS),
            seq: AtomicU32::new(0),
            counters: DatagramCounters::default(),
        })
    }

    /// The service handler's first look at a message: `Some` if it is a datagram for the bound
    /// endpoint (queued and claimed, or refused for now), `None` to handle it as a reply or
    /// notification.
    pub(crate) fn offer(&self, vchiq: &Vchiq, m: &Message<'_>) -> Option<Deliver> {
        let (h, rest) = frame::split(m.payload()).ok()?;
        if h.token & NOTIFY == 0 || !self.eps.is_bound(self.fourcc) {
            return None;
        }
        let Ok(body) = frame::payload(&h, rest) else {
            Counters::bump(&self.counters.dropped);
            return Some(Deliver::Done);
        };
        let Ok(buf) = self.rx_pool.alloc() else {
            // Every receive buffer is queued or held: leave the message in the remote's slot.
            Counters::bump(&self.counters.rx_backpressure);
            return Some(Deliver::Retry);
        };
        if buf.write(body).is_err() {
            Counters::bump(&self.counters.dropped);
            return Some(Deliver::Done);
        }
        // The claim is recorded before the buffer is visible in the queue. A claim still
        // recorded for a buffer fresh from the pool is stale (its datagram was dropped by an
        // unbind): give it back now.
        let idx = buf.index() as usize;
        let stale = self
            .claims
            .lock()
            .get_mut(idx)
            .and_then(|c| c.replace(m.token()));
        if let Some(t) = stale {
            let _ = vchiq.release_message(t);
        }
        if self.eps.push(self.fourcc, self.fourcc, buf).is_err() {
            // Unbound meanwhile: not a datagram after all, and not claimed.
            if let Some(c) = self.claims.lock().get_mut(idx) {
                *c = None;
            }
            Counters::bump(&self.counters.dropped);
            return Some(Deliver::Done);
        }
        Counters::bump(&self.counters.received);
        Some(Deliver::Hold)
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
    /// Shutdown: discard a zero-copy loan still out (so the service's CLOSE is not held back by
    /// it), give back every queued and held datagram (and its claim in the core).
    pub(crate) fn dgram_reset(&self) {
        self.vchiq.loan_revoke(self.service());
        let d = &self.sh.dgram;
        d.eps.clear();
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
        d.eps.bind(d.fourcc)
    }

    fn unbind(&self, ep: Endpoint) -> Result<()> {
        let d = &self.sh.dgram;
        // Give back what is queued (and its claims), then unbind; a datagram that slips in
        // between leaves a stale claim that `offer` returns when its buffer is reused. Bounded:
        // the remote can refill the queue as fast as it drains.
        for _ in 0..DGRAM_RX_BUFS {
            let Some((_, buf)) = d.eps.pop(&ep)? else {
                break;
            };
            let idx = buf.index();
            drop(buf);
            d.unclaim(&self.vchiq, idx);
        }
        d.eps.unbind(&ep)
    }

    fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()> {
        let _u = self.sh.lifecycle.acquire()?;
        let d = &self.sh.dgram;
        d.eps.check(ep)?;
        if dst != d.fourcc {
            return Err(Error::InvalidArgument);
        }
        if payload.len() > MAX_FRAME_PAYLOAD {
            return Err(Error::TooLarge);
        }
        let h = self.open_handle()?;
        // Relaxed: a sequence number for the remote's logs, not a publication.
        let seq = d.seq.fetch_add(1, Ordering::Relaxed) & !NOTIFY;
        let hdr = FrameHeader::new(NOTIFY | seq, payload.len() as u32);
        self.vchiq
            .queue_message_parts(h, &[hdr.as_bytes(), payload])
            .map_err(Error::from)?;
        Counters::bump(&d.counters.sent);
        Ok(())
    }

    fn loan(&self, ep: &Endpoint) -> Result<TxLoan> {
        let _u = self.sh.lifecycle.acquire()?;
        let d = &self.sh.dgram;
        d.eps.check(ep)?;
        let h = self.open_handle()?;
        let generation = self
            .vchiq
            .loan_reserve(h, VCHIQ_MAX_MSG_SIZE, SLOT_LOAN_LIFETIME)
            .map_err(Error::from)?;
        let bufs: Arc<dyn SharedTxBufs> = d.loans.clone();
        Ok(TxLoan::shared(bufs, generation))
    }

    fn send_loan(
        &self,
        ep: &Endpoint,
        dst: u32,
        loan: TxLoan,
    ) -> core::result::Result<(), (Error, TxLoan)> {
        let d = &self.sh.dgram;
        let checked = self.sh.lifecycle.acquire().and_then(|u| {
            d.eps.check(ep)?;
            if dst != d.fourcc {
                return Err(Error::InvalidArgument);
            }
            Ok((u, self.open_handle()?))
        });
        let (_u, h) = match checked {
            Ok(x) => x,
            Err(e) => return Err((e, loan)),
        };
        let (generation, len) = match loan.into_shared(&*d.loans) {
            Ok(x) => x,
            // Not a loan of this transport's slot.
            Err(loan) => return Err((Error::InvalidArgument, loan)),
        };
        // Relaxed: a sequence number for the remote's logs, not a publication.
        let seq = d.seq.fetch_add(1, Ordering::Relaxed) & !NOTIFY;
        let hdr = FrameHeader::new(NOTIFY | seq, len as u32);
        let sent = if self.vchiq.loan_write(generation, 0, hdr.as_bytes()) {
            self.vchiq.loan_commit(generation, h, FRAME_HEADER + len)
        } else {
            Err(VchiqError::Invalid)
        };
        match sent {
            Ok(()) => {
                Counters::bump(&d.counters.sent);
                Ok(())
            }
            Err(e) => {
                // Handed back as it was (`into_shared` disarmed the original); a loan that is no
                // longer live (expired) stays refused: its writes are dropped.
                let mut back = TxLoan::shared(d.loans.clone(), generation);
                let _ = back.set_len(len);
                let e = match e {
                    VchiqError::Invalid => Error::Timeout,
                    e => Error::from(e),
                };
                Err((e, back))
            }
        }
    }

    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize> {
        let d = &self.sh.dgram;
        d.eps.check(ep)?;
        if self.completion == fwipc_transport_api::Completion::Polled {
            self.vchiq.poll();
        }
        d.holds.poll(budget, &mut || d.eps.pop(ep), f, &mut |idx| {
            d.unclaim(&self.vchiq, idx)
        })
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
        self.sh.dgram.counters.snapshot(&self.sh.dgram.holds)
    }
}
