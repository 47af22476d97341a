//! The loopback's datagram side ([`Datagram`]): endpoints, one-way and zero-copy sends, held
//! receive buffers. The remote endpoint ([`LoopbackPeer`]) copies what it sends into this side's
//! receive pool, the way a remote fills a driver's receive buffers, so holding every receive
//! buffer stalls it (back-pressure) instead of losing messages.

use std::sync::Arc;

use fwipc_transport_api::fixture::DatagramPeer;
use fwipc_transport_api::{
    Bind, Counters, Datagram, DatagramStats, Endpoint, EndpointName, Error, Result, Rx, RxAction,
    RxHold, TxLoan,
};

use super::dgram_state::{DgramState, Outgoing, DYN_BASE, MAX_ENDPOINTS, PEER_ADDR};
use super::transport::{LoopbackTransport, MAX_MSG_SIZE};

impl Datagram for LoopbackTransport {
    fn bind(&self, how: Bind<'_>) -> Result<Endpoint> {
        let _user = self.inner.lc.acquire()?;
        if let Bind::Name(n) = how {
            // The loopback has no name service: the name is checked, not announced.
            EndpointName::new(n)?;
        }
        let eps = &self.dgram.endpoints;
        let addr = match how {
            Bind::Addr(a) if a == PEER_ADDR => return Err(Error::InvalidArgument),
            Bind::Addr(a) => a,
            Bind::Any | Bind::Name(_) => (DYN_BASE..DYN_BASE + MAX_ENDPOINTS as u32)
                .find(|&a| !eps.is_bound(a))
                .ok_or(Error::Busy)?,
        };
        eps.bind(addr)
    }

    fn unbind(&self, ep: Endpoint) -> Result<()> {
        self.dgram.endpoints.unbind(&ep)
    }

    fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()> {
        let _user = self.inner.lc.acquire()?;
        self.dgram.endpoints.check(ep)?;
        if payload.len() > MAX_MSG_SIZE {
            return Err(Error::TooLarge);
        }
        let buf = self
            .inner
            .table
            .pool()
            .alloc()
            .inspect_err(|_| Counters::bump(&self.inner.table.counters().busy))?;
        buf.write(payload)?;
        self.dgram.to_peer.lock().push_back((ep.addr(), dst, buf));
        Counters::bump(&self.dgram.counters.sent);
        Ok(())
    }

    fn loan(&self, ep: &Endpoint) -> Result<TxLoan> {
        let _user = self.inner.lc.acquire()?;
        self.dgram.endpoints.check(ep)?;
        let buf = self
            .inner
            .table
            .pool()
            .alloc()
            .inspect_err(|_| Counters::bump(&self.inner.table.counters().busy))?;
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
        if let Err(e) = self.dgram.endpoints.check(ep) {
            return Err((e, loan));
        }
        // Another backend's shared transmit buffer is not ours to send.
        let buf = match loan.into_buf() {
            Ok(buf) => buf,
            Err(loan) => return Err((Error::InvalidArgument, loan)),
        };
        // The buffer moves to the remote as it is: no copy.
        self.dgram.to_peer.lock().push_back((ep.addr(), dst, buf));
        Counters::bump(&self.dgram.counters.sent);
        Ok(())
    }

    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize> {
        let d = &self.dgram;
        d.holds
            .poll(budget, &mut || d.endpoints.pop(ep), f, &mut |_| ())
    }

    fn with_held(&self, hold: RxHold, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.dgram.holds.with(hold, f)
    }

    fn release_rx(&self, hold: RxHold) -> Result<()> {
        self.dgram.holds.release(hold)
    }

    fn datagram_stats(&self) -> DatagramStats {
        self.dgram.counters.snapshot(&self.dgram.holds)
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
        let buf = self
            .st
            .rx_pool
            .alloc()
            .inspect_err(|_| Counters::bump(&self.st.counters.rx_backpressure))?;
        buf.write(payload)?;
        match self.st.endpoints.push(dst, PEER_ADDR, buf) {
            Ok(()) => Counters::bump(&self.st.counters.received),
            // No endpoint: the message is dropped and counted, as on a real bus.
            Err(_) => Counters::bump(&self.st.counters.dropped),
        }
        Ok(())
    }

    fn take_received(&self) -> Vec<(u32, Vec<u8>)> {
        let msgs: Vec<Outgoing> = self.st.to_peer.lock().drain(..).collect();
        msgs.into_iter()
            .filter(|(_, dst, _)| {
                if *dst != PEER_ADDR {
                    Counters::bump(&self.st.counters.dropped);
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
