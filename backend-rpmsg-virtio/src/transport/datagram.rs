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
//! Zero-copy send is not offered: [`Link::send`] copies the frame into a transmit buffer, so a
//! loaned pool buffer would be copied anyway. `Caps::zero_copy` stays off.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use fwipc_transport_api::{
    Bind, Clock, Datagram, DatagramStats, Endpoint, EndpointEvent, EndpointName, Error, HoldTable,
    MsgPool, PoolBuf, Result, Rx, RxAction, RxHold,
};
use spin::Mutex;

use super::{link_err, RpmsgTransport};
use crate::addr::{ADDR_ANY, BUF_SIZE, MAX_PAYLOAD, NS_ADDR, TRANSFER_ADDR_BASE};
use crate::error::RpmsgError;
use crate::frame::{write_frame, NsAnnounce};
use crate::link::Link;
use crate::name::Name;

/// Receive buffers for datagram endpoints: how many datagrams can wait for (or be held by) the
/// user before the receive path stops taking frames.
pub const DGRAM_RX_BUFS: usize = 32;
/// Name-service events queued before new ones are dropped (and counted).
const EVENT_SLOTS: usize = 16;
/// The name an endpoint bound by address carries in the endpoint table (never announced).
const UNNAMED: &[u8] = b"fwipc-datagram";

struct EpSlot {
    generation: u32,
    /// The bound address; `None` when free.
    addr: Option<u32>,
    named: bool,
    queue: VecDeque<(u32, PoolBuf)>,
}

/// The datagram state of a transport (part of [`RpmsgTransport`]).
pub(crate) struct DgramSide {
    rx_pool: MsgPool,
    holds: HoldTable,
    eps: Mutex<Vec<EpSlot>>,
    events: Mutex<VecDeque<EndpointEvent>>,
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
    /// Room for `endpoints` datagram endpoints.
    pub(crate) fn new(endpoints: usize) -> core::result::Result<Self, Error> {
        Ok(DgramSide {
            rx_pool: MsgPool::new(DGRAM_RX_BUFS, MAX_PAYLOAD)?,
            holds: HoldTable::new(DGRAM_RX_BUFS),
            eps: Mutex::new(
                (0..endpoints)
                    .map(|_| EpSlot {
                        generation: 0,
                        addr: None,
                        named: false,
                        queue: VecDeque::with_capacity(DGRAM_RX_BUFS),
                    })
                    .collect(),
            ),
            events: Mutex::new(VecDeque::with_capacity(EVENT_SLOTS)),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            backpressure: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// How many frames the receive path may take now: each may need a receive buffer. Zero
    /// (counted) leaves the peer's messages in the ring.
    pub(crate) fn rx_room(&self, budget: usize) -> usize {
        let room = budget.min(self.rx_pool.free_count());
        if room == 0 && budget > 0 {
            bump(&self.backpressure);
        }
        room
    }

    /// A message from `src` for `dst`: `true` if `dst` is a datagram endpoint (the message is
    /// then queued, or dropped and counted).
    pub(crate) fn deliver(&self, src: u32, dst: u32, payload: &[u8]) -> bool {
        let mut eps = self.eps.lock();
        let Some(e) = eps.iter_mut().find(|e| e.addr == Some(dst)) else {
            return false;
        };
        // Cannot be empty: the receive path takes no more frames than there are free buffers.
        match self.rx_pool.alloc() {
            Ok(buf) if buf.write(payload).is_ok() => {
                e.queue.push_back((src, buf));
                bump(&self.received);
            }
            _ => bump(&self.dropped),
        }
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
            bump(&self.dropped);
            return;
        }
        q.push_back(ev);
    }

    /// Shutdown: drop queued datagrams and every held buffer (outstanding holds go stale).
    pub(crate) fn reset(&self) {
        let mut drained = Vec::new();
        for e in self.eps.lock().iter_mut() {
            drained.extend(e.queue.drain(..));
        }
        drop(drained);
        self.holds.release_all();
    }

    fn check(&self, ep: &Endpoint) -> Result<()> {
        match self.eps.lock().get(ep.index() as usize) {
            Some(e) if e.addr == Some(ep.addr()) && e.generation == ep.generation() => Ok(()),
            _ => Err(Error::InvalidArgument),
        }
    }
}

impl<L: Link, C: Clock + Send> Datagram for RpmsgTransport<L, C> {
    fn bind(&self, how: Bind<'_>) -> Result<Endpoint> {
        let _user = self.lc.acquire()?;
        let (name, addr, named) = match how {
            Bind::Any => (UNNAMED, ADDR_ANY, false),
            Bind::Addr(a) if a == ADDR_ANY || a == NS_ADDR || a >= TRANSFER_ADDR_BASE => {
                return Err(Error::InvalidArgument)
            }
            Bind::Addr(a) => (UNNAMED, a, false),
            Bind::Name(n) => (n, ADDR_ANY, true),
        };
        let name = Name::new(name).map_err(|_| Error::InvalidArgument)?;
        let mut eps = self.dgram.eps.lock();
        let (i, slot) = eps
            .iter_mut()
            .enumerate()
            .find(|(_, e)| e.addr.is_none())
            .ok_or(Error::Busy)?;
        let addr = self.node.lock().bind(name, addr)?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.addr = Some(addr);
        slot.named = named;
        let ep = Endpoint::new(i as u32, slot.generation, addr);
        drop(eps);
        if named {
            // Best effort, like Linux's `rpmsg_ns_announce` from `rpmsg_dev_probe`: the
            // endpoint is usable whether or not the announcement went out.
            if let Err(e) = self.announce(addr, false) {
                log::warn!("rpmsg: announcing endpoint {addr} failed: {e}");
            }
        }
        Ok(ep)
    }

    fn unbind(&self, ep: Endpoint) -> Result<()> {
        self.dgram.check(&ep)?;
        let (named, queued) = {
            let mut eps = self.dgram.eps.lock();
            let e = &mut eps[ep.index() as usize];
            let q: Vec<_> = e.queue.drain(..).collect();
            e.addr = None;
            (e.named, q)
        };
        drop(queued);
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
        self.dgram.check(ep)?;
        if dst == ADDR_ANY || dst == NS_ADDR {
            return Err(Error::InvalidArgument);
        }
        let mut frame = [0u8; BUF_SIZE];
        let n = write_frame(&mut frame, ep.addr(), dst, payload).map_err(|e| match e {
            crate::error::WireError::TooLarge => Error::TooLarge,
            e => Error::from(RpmsgError::from(e)),
        })?;
        self.link.send(&frame[..n]).map_err(link_err)?;
        bump(&self.dgram.sent);
        Ok(())
    }

    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize> {
        self.dgram.check(ep)?;
        self.handle_interrupt();
        let d = &self.dgram;
        let mut n = 0;
        while n < budget {
            let next = {
                let mut eps = d.eps.lock();
                match eps.get_mut(ep.index() as usize) {
                    Some(e) if e.generation == ep.generation() && e.addr == Some(ep.addr()) => {
                        e.queue.pop_front()
                    }
                    _ => return Err(Error::InvalidArgument),
                }
            };
            let Some((src, buf)) = next else { break };
            let hold = d.holds.deliver(&buf)?;
            let len = buf.len();
            // No lock of ours is held while the callback runs, except this buffer's own.
            let action = buf.with(|b| {
                f(Rx {
                    src,
                    data: &b[..len],
                    hold,
                })
            });
            if action == RxAction::Hold {
                d.holds.hold(hold, buf)?;
            }
            n += 1;
        }
        Ok(n)
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
        let d = &self.dgram;
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
