//! The plain types of the datagram extension: endpoint handles, names, received messages,
//! events and counters.

use super::RxHold;
use crate::{Error, Result};

/// Longest endpoint name: 31 bytes, what fits with its terminating NUL in the 32-byte
/// `rpmsg_ns_msg` name field (Linux `include/linux/rpmsg/ns.h`), the largest of the supported
/// protocols.
pub const NAME_MAX: usize = 31;

/// An endpoint name: 1 to 31 bytes, no NUL.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointName {
    bytes: [u8; NAME_MAX],
    len: u8,
}

impl EndpointName {
    /// `InvalidArgument` for an empty name, a name longer than 31 bytes, or one containing NUL.
    pub fn new(name: &[u8]) -> Result<Self> {
        if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) {
            return Err(Error::InvalidArgument);
        }
        let mut bytes = [0u8; NAME_MAX];
        bytes[..name.len()].copy_from_slice(name);
        Ok(EndpointName {
            bytes,
            len: name.len() as u8,
        })
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl core::fmt::Debug for EndpointName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_bytes().escape_ascii())
    }
}

/// How to bind a local endpoint ([`crate::Datagram::bind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind<'a> {
    /// Any free address, chosen by the backend.
    Any,
    /// This address (an rpmsg address, a VCHIQ service handle...).
    Addr(u32),
    /// A name, at an address chosen by the backend; announced to the remote where the protocol
    /// has a name service.
    Name(&'a [u8]),
}

/// A bound local endpoint. Not `Clone`: [`crate::Datagram::unbind`] consumes it. The index and
/// generation let the backend refuse a handle whose endpoint was unbound and its slot reused.
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "an endpoint stays bound until `unbind`"]
pub struct Endpoint {
    index: u32,
    generation: u32,
    addr: u32,
}

impl Endpoint {
    /// For backends: the endpoint table index, its generation, and the local address.
    pub const fn new(index: u32, generation: u32, addr: u32) -> Self {
        Endpoint {
            index,
            generation,
            addr,
        }
    }

    /// The backend's table index.
    pub const fn index(&self) -> u32 {
        self.index
    }

    /// The table slot's generation when the endpoint was bound.
    pub const fn generation(&self) -> u32 {
        self.generation
    }

    /// The local address (what the remote sends to).
    pub const fn addr(&self) -> u32 {
        self.addr
    }
}

/// A received datagram, as the [`crate::Datagram::poll_rx`] callback sees it.
///
/// `data` is a private copy (a buffer of this side's receive pool): the remote can no longer
/// write it, so a plain slice over it is sound (docs/reliability.md, "Invariants").
#[derive(Debug)]
pub struct Rx<'a> {
    /// The remote address it came from.
    pub src: u32,
    /// The payload.
    pub data: &'a [u8],
    /// The handle that keeps the buffer if the callback returns [`RxAction::Hold`]; stale (every
    /// use refused) if it returns [`RxAction::Release`].
    pub hold: RxHold,
}

/// What the receive callback does with the buffer it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxAction {
    /// Give the buffer back now.
    Release,
    /// Keep it until [`crate::Datagram::release_rx`] with [`Rx::hold`].
    Hold,
}

/// A datagram taken from the pull queue ([`crate::Datagram::recv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxInfo {
    /// The remote address it came from.
    pub src: u32,
    /// Bytes copied out.
    pub len: usize,
}

/// A change in the remote's endpoints, seen through the protocol's name service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// The remote announced an endpoint: a local endpoint bound to the same name can now reach it
    /// at `addr` (Zephyr's "bound").
    Announced {
        /// The service name.
        name: EndpointName,
        /// The remote address.
        addr: u32,
    },
    /// The remote destroyed the endpoint.
    Destroyed {
        /// The service name.
        name: EndpointName,
        /// The remote address it had.
        addr: u32,
    },
}

/// Counters of the datagram side. `#[non_exhaustive]`: backends start from `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DatagramStats {
    /// One-way messages queued for the remote (copied and zero-copy).
    pub sent: u64,
    /// Datagrams delivered to a local endpoint.
    pub received: u64,
    /// Receive buffers held right now.
    pub held: u64,
    /// Releases of a handle that was not held (refused).
    pub double_releases: u64,
    /// Times the remote found no free receive buffer (it had to wait: back-pressure).
    pub rx_backpressure: u64,
    /// Datagrams for no bound endpoint, or malformed (dropped).
    pub dropped: u64,
    /// Sends and loans refused because the remote held every transmit buffer (0 where the
    /// backend's link does not count it).
    pub tx_exhausted: u64,
    /// Receive passes that stopped at their budget with messages still waiting (the next pass
    /// takes them; 0 where the backend's link does not count it).
    pub rx_budget_hits: u64,
}
