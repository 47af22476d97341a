//! The loopback's datagram side ([`Datagram`]): endpoints, one-way and zero-copy sends, held
//! receive buffers. The remote endpoint ([`LoopbackPeer`]) copies what it sends into this side's
//! receive pool, the way a remote fills a driver's receive buffers, so holding every receive
//! buffer stalls it (back-pressure) instead of losing messages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fwipc_transport_api::fixture::DatagramPeer;
use fwipc_transport_api::{
    Bind, Counters, Datagram, DatagramStats, Endpoint, EndpointName, Error, HoldTable, MsgPool,
    PoolBuf, Result, Rx, RxAction, RxHold, TxLoan,
};
use spin::Mutex;

use super::transport::{LoopbackTransport, MAX_MSG_SIZE};

/// Receive buffers (what the remote can fill before it must wait).
pub const RX_BUFS: usize = 16;
/// Local endpoints that can be bound at once.
const MAX_ENDPOINTS: usize = 8;
/// First address handed out by [`Bind::Any`] and [`Bind::Name`] (the rpmsg dynamic range).
const DYN_BASE: u32 = 0x400;
/// The remote endpoint's address.
pub const PEER_ADDR: u32 = 0x35a;

struct EpSlot {
    generation: u32,
    bound: bool,
    addr: u32,
    /// Kept for the name-service-less loopback only as a label.
    #[allow(dead_code)]
    name: Option<EndpointName>,
    queue: VecDeque<(u32, PoolBuf)>,
}

/// One message travelling to the remote endpoint: (source, destination, buffer).
type Outgoing = (u32, u32, PoolBuf);

/// The datagram state shared by the transport and the remote endpoint.
pub(crate) struct DgramState {
    rx_pool: MsgPool,
    holds: HoldTable,
    endpoints: Mutex<Vec<EpSlot>>,
    to_peer: Mutex<VecDeque<Outgoing>>,
    sent: AtomicU64,
    received: AtomicU64,
    backpressure: AtomicU64,
    dropped: AtomicU64,
}

impl DgramState {
    pub(crate) fn new(tx_capacity: usize) -> Self {
        DgramState {
            rx_pool: MsgPool::new(RX_BUFS, MAX_MSG_SIZE).expect("static sizes"),
            holds: HoldTable::new(RX_BUFS),
            endpoints: Mutex::new(
                (0..MAX_ENDPOINTS)
                    .map(|_| EpSlot {
                        generation: 0,
                        bound: false,
                        addr: 0,
                        name: None,
                        queue: VecDeque::with_capacity(RX_BUFS),
                    })
                    .collect(),
            ),
            to_peer: Mutex::new(VecDeque::with_capacity(tx_capacity)),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            backpressure: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Shutdown: drop every queued message and held buffer; outstanding holds go stale.
    pub(crate) fn reset(&self) {
        let drained: Vec<_> = self
            .endpoints
            .lock()
            .iter_mut()
            .flat_map(|e| e.queue.drain(..))
            .collect();
        drop(drained);
        self.to_peer.lock().clear();
        self.holds.release_all();
    }

    fn check(&self, ep: &Endpoint) -> Result<()> {
        let eps = self.endpoints.lock();
        match eps.get(ep.index() as usize) {
            Some(e) if e.bound && e.generation == ep.generation() => Ok(()),
            _ => Err(Error::InvalidArgument),
        }
    }
}

impl Datagram for LoopbackTransport {
    fn bind(&self, how: Bind<'_>) -> Result<Endpoint> {
        let _user = self.inner.lc.acquire()?;
        let name = match how {
            Bind::Name(n) => Some(EndpointName::new(n)?),
            _ => None,
        };
        let mut eps = self.dgram.endpoints.lock();
        let taken = |eps: &[EpSlot], a: u32| eps.iter().any(|e| e.bound && e.addr == a);
        let addr = match how {
            Bind::Addr(a) if a == PEER_ADDR || taken(&eps, a) => {
                return Err(Error::InvalidArgument)
            }
            Bind::Addr(a) => a,
            Bind::Any | Bind::Name(_) => (DYN_BASE..DYN_BASE + MAX_ENDPOINTS as u32 * 2)
                .find(|&a| !taken(&eps, a))
                .ok_or(Error::Busy)?,
        };
        let (i, slot) = eps
            .iter_mut()
            .enumerate()
            .find(|(_, e)| !e.bound)
            .ok_or(Error::Busy)?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.bound = true;
        slot.addr = addr;
        slot.name = name;
        Ok(Endpoint::new(i as u32, slot.generation, addr))
    }

    fn unbind(&self, ep: Endpoint) -> Result<()> {
        self.dgram.check(&ep)?;
        let queued: Vec<_> = {
            let mut eps = self.dgram.endpoints.lock();
            let e = &mut eps[ep.index() as usize];
            e.bound = false;
            e.name = None;
            e.queue.drain(..).collect()
        };
        drop(queued);
        Ok(())
    }

    fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()> {
        let _user = self.inner.lc.acquire()?;
        self.dgram.check(ep)?;
        if payload.len() > MAX_MSG_SIZE {
            return Err(Error::TooLarge);
        }
        let buf = self
            .inner
            .pool
            .alloc()
            .inspect_err(|_| Counters::bump(&self.inner.counters.busy))?;
        buf.write(payload)?;
        self.dgram.to_peer.lock().push_back((ep.addr(), dst, buf));
        // Relaxed: statistics counter only.
        self.dgram.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn loan(&self, ep: &Endpoint) -> Result<TxLoan> {
        let _user = self.inner.lc.acquire()?;
        self.dgram.check(ep)?;
        let buf = self
            .inner
            .pool
            .alloc()
            .inspect_err(|_| Counters::bump(&self.inner.counters.busy))?;
        TxLoan::new(buf)
    }

    fn send_loan(
        &self,
        ep: &Endpoint,
        dst: u32,
        loan: TxLoan,
    ) -> core::result::Result<(), (Error, TxLoan)> {
        let _user = match self.inner.lc.acquire() {
            Ok(u) => u,
            Err(e) => return Err((e, loan)),
        };
        if let Err(e) = self.dgram.check(ep) {
            return Err((e, loan));
        }
        // The buffer moves to the remote as it is: no copy.
        self.dgram
            .to_peer
            .lock()
            .push_back((ep.addr(), dst, loan.into_buf()));
        // Relaxed: statistics counter only.
        self.dgram.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize> {
        let mut n = 0;
        while n < budget {
            let next = {
                let mut eps = self.dgram.endpoints.lock();
                match eps.get_mut(ep.index() as usize) {
                    Some(e) if e.bound && e.generation == ep.generation() => e.queue.pop_front(),
                    _ => return Err(Error::InvalidArgument),
                }
            };
            let Some((src, buf)) = next else { break };
            let hold = self.dgram.holds.deliver(&buf)?;
            let len = buf.len();
            // The callback runs with no lock of ours held except this buffer's own.
            let action = buf.with(|d| {
                f(Rx {
                    src,
                    data: &d[..len],
                    hold,
                })
            });
            if action == RxAction::Hold {
                self.dgram.holds.hold(hold, buf)?;
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

/// The remote endpoint of the loopback (at [`PEER_ADDR`]), driven by the conformance suite.
pub struct LoopbackPeer {
    st: Arc<DgramState>,
}

impl LoopbackPeer {
    pub(crate) fn new(st: Arc<DgramState>) -> Self {
        LoopbackPeer { st }
    }
}

impl DatagramPeer for LoopbackPeer {
    fn addr(&self) -> u32 {
        PEER_ADDR
    }

    fn send(&self, dst: u32, payload: &[u8]) -> Result<()> {
        if payload.len() > MAX_MSG_SIZE {
            return Err(Error::TooLarge);
        }
        let buf = self.st.rx_pool.alloc().inspect_err(|_| {
            // Relaxed: statistics counter only.
            self.st.backpressure.fetch_add(1, Ordering::Relaxed);
        })?;
        buf.write(payload)?;
        let mut eps = self.st.endpoints.lock();
        match eps.iter_mut().find(|e| e.bound && e.addr == dst) {
            Some(e) => {
                e.queue.push_back((PEER_ADDR, buf));
                // Relaxed: statistics counter only.
                self.st.received.fetch_add(1, Ordering::Relaxed);
            }
            // No endpoint: the message is dropped and counted, as on a real bus.
            None => {
                // Relaxed: statistics counter only.
                self.st.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn take_received(&self) -> Vec<(u32, Vec<u8>)> {
        let msgs: Vec<Outgoing> = self.st.to_peer.lock().drain(..).collect();
        msgs.into_iter()
            .filter(|(_, dst, _)| {
                if *dst != PEER_ADDR {
                    // Relaxed: statistics counter only.
                    self.st.dropped.fetch_add(1, Ordering::Relaxed);
                }
                *dst == PEER_ADDR
            })
            .map(|(src, _, buf)| {
                let mut v = vec![0u8; buf.len()];
                buf.read_into(&mut v);
                (src, v)
            })
            .collect()
    }
}
