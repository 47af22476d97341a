//! The loopback's datagram state, shared by the transport ([`super::datagram`]) and its remote
//! endpoint: the receive pool and its holds, the endpoints and their queues, and the messages on
//! their way to the remote.

use std::collections::VecDeque;

use fwipc_transport_api::{DatagramCounters, EndpointQueues, HoldTable, MsgPool, PoolBuf};
use spin::Mutex;

/// Receive buffers (what the remote can fill before it must wait).
pub const RX_BUFS: usize = 16;
/// Local endpoints that can be bound at once.
pub(crate) const MAX_ENDPOINTS: usize = 8;
/// First address handed out by [`Bind::Any`] and [`Bind::Name`] (the rpmsg dynamic range).
pub(crate) const DYN_BASE: u32 = 0x400;
/// The remote endpoint's address.
pub const PEER_ADDR: u32 = 0x35a;

/// One message travelling to the remote endpoint: (source, destination, buffer).
pub(crate) type Outgoing = (u32, u32, PoolBuf);

/// The datagram state shared by the transport and the remote endpoint.
pub(crate) struct DgramState {
    pub(crate) rx_pool: MsgPool,
    pub(crate) holds: HoldTable,
    pub(crate) endpoints: EndpointQueues,
    pub(crate) to_peer: Mutex<VecDeque<Outgoing>>,
    pub(crate) counters: DatagramCounters,
}

impl DgramState {
    /// Room for `tx_capacity` messages on their way to the remote; receive buffers of
    /// `buf_size` bytes.
    pub(crate) fn new(tx_capacity: usize, buf_size: usize) -> Self {
        DgramState {
            rx_pool: MsgPool::new(RX_BUFS, buf_size).expect("static sizes"),
            holds: HoldTable::new(RX_BUFS),
            endpoints: EndpointQueues::new(MAX_ENDPOINTS, RX_BUFS),
            to_peer: Mutex::new(VecDeque::with_capacity(tx_capacity)),
            counters: DatagramCounters::default(),
        }
    }

    /// Shutdown: drop every queued message and held buffer; outstanding holds go stale.
    pub(crate) fn reset(&self) {
        self.endpoints.clear();
        self.to_peer.lock().clear();
        self.holds.release_all();
    }
}
