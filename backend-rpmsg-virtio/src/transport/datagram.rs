//! [`Datagram`] for [`RpmsgTransport`]: rpmsg endpoints as the protocol defines them (one-way
//! messages between addresses, named endpoints announced through the name service), beside the
//! request/reply calls. docs/datagram.md describes the model.
//!
//! Receive: a message for a bound datagram endpoint is copied (the frame is already a private
//! copy, see [`Link::receive`]) into a buffer of a receive pool of [`DGRAM_RX_BUFS`] and queued
//! on its endpoint. The receive path takes no more frames than there are free receive buffers,
//! so while the user holds them the peer's messages wait in the receive ring and, once the ring
//! is full, the peer's sends fail: back-pressure, nothing lost. rpmsg has one receive ring for
//! all endpoints, so replies to calls wait behind them too.
//!
//! Zero-copy send: [`Link::loan`] loans one of the link's own transmit buffers (on the rings,
//! a driver-owned 512-byte virtqueue buffer) as a shared [`TxLoan`] over its payload area; the
//! caller writes it in place with [`TxLoan::write`] (no Rust reference to the buffer), and
//! [`Link::send_loan`] writes the header in front and publishes it. A dropped loan gives the
//! buffer back to the link.

use alloc::collections::VecDeque;

use fwipc_transport_api::{
    Bind, Clock, Counters, Datagram, DatagramCounters, DatagramStats, Endpoint, EndpointEvent,
    EndpointName, EndpointQueues, Error, HoldTable, MsgPool, Result, Rx, RxAction, RxHold, TxLoan,
};
use spin::Mutex;

use super::{link_err, RpmsgTransport};
use crate::addr::{ADDR_ANY, MAX_PAYLOAD, NS_ADDR, TRANSFER_ADDR_BASE};
use crate::frame::NsAnnounce;
use crate::hdr::RpmsgHdr;
use crate::link::Link;
use crate::name::Name;

/// Receive buffers for datagram endpoints: how many datagrams can wait for (or be held by) the
/// user before the receive path stops taking frames.
pub const DGRAM_RX_BUFS: usize = 32;
/// Name-service events queued before new ones are dropped (and counted).
const EVENT_SLOTS: usize = 16;
/// The name an endpoint bound by address carries in the endpoint table (never announced).
const UNNAMED: &[u8] = b"fwipc-datagram";

/// The datagram state of a transport (part of [`RpmsgTransport`]).
pub(crate) struct DgramSide {
    rx_pool: MsgPool,
    holds: HoldTable,
    eps: EndpointQueues,
    events: Mutex<VecDeque<EndpointEvent>>,
    counters: DatagramCounters,
}

impl DgramSide {
    /// Room for `endpoints` datagram endpoints.
    pub(crate) fn new(endpoints: usize) -> core::result::Result<Self, Error> {
        Ok(DgramSide {
            rx_pool: MsgPool::new(DGRAM_RX_BUFS, MAX_PAYLOAD)?,
            holds: HoldTable::new(DGRAM_RX_BUFS),
            eps: EndpointQueues::new(endpoints, DGRAM_RX_BUFS),
            events: Mutex::new(VecDeque::with_capacity(EVENT_SLOTS)),
            counters: DatagramCounters::default(),
        })
    }

    /// How many frames the receive path may take now: each may need a receive buffer. Zero
    /// (counted) leaves the peer's messages in the ring.
    pub(crate) fn rx_room(&self, budget: usize) -> usize {
        let room = budget.min(self.rx_pool.free_count());
        if room == 0 && budget > 0 {
            Counters::bump(&self.counters.rx_backpressure);
        }
        room
    }

    /// A message from `src` for `dst`: `true` if `dst` is a datagram endpoint (the message is
    /// then queued, or dropped and counted).
    pub(crate) fn deliver(&self, src: u32, dst: u32, payload: &[u8]) -> bool {
        if !self.eps.is_bound(dst) {
            return false;
        }
        // Cannot be empty: the receive path takes no more frames than there are free buffers.
        let queued = match self.rx_pool.alloc() {
            Ok(buf) if buf.write(payload).is_ok() => self.eps.push(dst, src, buf).is_ok(),
            _ => false,
        };
        Counters::bump(if queued {
            &self.counters.received
        } else {
            &self.counters.dropped
        });
        true
    }

    /// The peer announced or destroyed a service.
    pub(crate) fn on_ns(&self, a: &NsAnnounce) {
        // A parsed name is 1..=31 bytes without NUL: always a valid endpoint name.
        let Ok(name) = EndpointName::new(a.name.as_bytes()) else {
            return;
        };
        let ev = if a.destroy {
            EndpointEvent::Destroyed { name, addr: a.addr }
        } else {
            EndpointEvent::Announced { name, addr: a.addr }
        };
        let mut q = self.events.lock();
        if q.len() >= EVENT_SLOTS {
            Counters::bump(&self.counters.dropped);
            return;
        }
        q.push_back(ev);
    }

    /// Shutdown: drop queued datagrams and every held buffer (outstanding holds go stale).
    pub(crate) fn reset(&self) {
        self.eps.clear();
        self.holds.release_all();
    }
}

impl<L: Link, C: Clock + Send> Datagram for RpmsgTransport<L, C> {
    fn bind(&self, how: Bind<'_>) -> Result<Endpoint> {
        let _user = self.lc.acquire()?;
        let (name, addr) = match how {
            Bind::Any => (UNNAMED, ADDR_ANY),
            Bind::Addr(a) if a == ADDR_ANY || a == NS_ADDR || a >= TRANSFER_ADDR_BASE => {
                return Err(Error::InvalidArgument)
            }
            Bind::Addr(a) => (UNNAMED, a),
            // The placeholder name marks endpoints that are never announced.
            Bind::Name(n) if n == UNNAMED => return Err(Error::InvalidArgument),
            Bind::Name(n) => (n, ADDR_ANY),
        };
        let name = Name::new(name).map_err(|_| Error::InvalidArgument)?;
        // The node allocates the address (one table with the notification endpoint); the queue
        // table then takes it, or the node's binding is undone.
        let addr = self.node.lock().bind(name, addr)?;
        let ep = self.dgram.eps.bind(addr).inspect_err(|_| {
            let _ = self.node.lock().unbind(addr);
        })?;
        if name.as_bytes() != UNNAMED {
            // Best effort, like Linux's `rpmsg_ns_announce` from `rpmsg_dev_probe`: the
            // endpoint is usable whether or not the announcement went out.
            if let Err(e) = self.announce(addr, false) {
                log::warn!("rpmsg: announcing endpoint {addr} failed: {e}");
            }
        }
        Ok(ep)
    }

    fn unbind(&self, ep: Endpoint) -> Result<()> {
        self.dgram.eps.unbind(&ep)?;
        let named = self
            .node
            .lock()
            .endpoints()
            .lookup(ep.addr())
            .is_some_and(|e| e.name.as_bytes() != UNNAMED);
        if named {
            if let Err(e) = self.announce(ep.addr(), true) {
                log::warn!(
                    "rpmsg: announcing the end of endpoint {} failed: {e}",
                    ep.addr()
                );
            }
        }
        self.node.lock().unbind(ep.addr())?;
        Ok(())
    }

    fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()> {
        let _user = self.lc.acquire()?;
        self.dgram.eps.check(ep)?;
        if dst == ADDR_ANY || dst == NS_ADDR {
            return Err(Error::InvalidArgument);
        }
        let len = u16::try_from(payload.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_PAYLOAD)
            .ok_or(Error::TooLarge)?;
        let hdr = RpmsgHdr::new(ep.addr(), dst, len).to_bytes();
        self.link.send_parts(&hdr, payload).map_err(link_err)?;
        Counters::bump(&self.dgram.counters.sent);
        Ok(())
    }

    fn loan(&self, ep: &Endpoint) -> Result<TxLoan> {
        let _user = self.lc.acquire()?;
        self.dgram.eps.check(ep)?;
        self.link.loan().map_err(link_err)
    }

    fn send_loan(
        &self,
        ep: &Endpoint,
        dst: u32,
        loan: TxLoan,
    ) -> core::result::Result<(), (Error, TxLoan)> {
        let _user = match self.lc.acquire() {
            Ok(u) => u,
            Err(e) => return Err((e, loan)),
        };
        if let Err(e) = self.dgram.eps.check(ep) {
            return Err((e, loan));
        }
        if dst == ADDR_ANY || dst == NS_ADDR {
            return Err((Error::InvalidArgument, loan));
        }
        // A loan of this link is at most MAX_PAYLOAD bytes long.
        let Ok(len) = u16::try_from(loan.len()) else {
            return Err((Error::TooLarge, loan));
        };
        let hdr = RpmsgHdr::new(ep.addr(), dst, len).to_bytes();
        self.link
            .send_loan(&hdr, loan)
            .map_err(|(e, l)| (link_err(e), l))?;
        Counters::bump(&self.dgram.counters.sent);
        Ok(())
    }

    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize> {
        self.dgram.eps.check(ep)?;
        self.handle_interrupt();
        let d = &self.dgram;
        d.holds.poll(budget, &mut || d.eps.pop(ep), f, &mut |_| ())
    }

    fn with_held(&self, hold: RxHold, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.dgram.holds.with(hold, f)
    }

    fn release_rx(&self, hold: RxHold) -> Result<()> {
        self.dgram.holds.release(hold)
    }

    fn next_event(&self) -> Option<EndpointEvent> {
        self.handle_interrupt();
        self.dgram.events.lock().pop_front()
    }

    fn datagram_stats(&self) -> DatagramStats {
        let mut s = self.dgram.counters.snapshot(&self.dgram.holds);
        s.tx_exhausted = self.link.tx_exhausted();
        s.rx_budget_hits = self.link.budget_hits();
        s
    }
}
