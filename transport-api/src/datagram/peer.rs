//! The conformance suite's view of the remote's datagram side.

use alloc::vec::Vec;

use super::EndpointName;
use crate::Result;

/// A remote endpoint the conformance suite drives ([`crate::fixture::Fixture::datagram`]).
pub trait DatagramPeer: Send + Sync {
    /// The remote endpoint's address (what the local side sends to).
    fn addr(&self) -> u32;
    /// The remote sends `payload` one-way from [`DatagramPeer::addr`] to the local address
    /// `dst`. `Err(Busy)` or `Err(Retry)` when the local side has no free receive buffer
    /// (back-pressure: nothing was sent, the caller may retry).
    fn send(&self, dst: u32, payload: &[u8]) -> Result<()>;
    /// What the remote endpoint received, oldest first, as (source address, payload); cleared by
    /// reading.
    fn take_received(&self) -> Vec<(u32, Vec<u8>)>;
    /// The remote binds an endpoint named `name` and announces it; returns its address (`None`
    /// without a name service).
    fn announce(&self, name: &[u8]) -> Option<u32> {
        let _ = name;
        None
    }
    /// The remote announces the destruction of the endpoint it bound at `addr` and unbinds it
    /// (`false` without a name service).
    fn destroy(&self, addr: u32) -> bool {
        let _ = addr;
        false
    }
    /// Name-service messages the remote received from the local side, oldest first, as (name,
    /// address, `true` for a destroy); cleared by reading.
    fn take_announcements(&self) -> Vec<(EndpointName, u32, bool)> {
        Vec::new()
    }
}
