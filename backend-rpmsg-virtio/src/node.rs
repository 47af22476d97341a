//! One rpmsg node: its endpoint table, the services its peer announced, and the receive
//! dispatch that both roles share (the simulated remote runs this same code as the device).

use crate::addr::{ADDR_ANY, NS_ADDR};
use crate::endpoint::{Endpoint, EndpointTable, RemoteServices};
use crate::error::RpmsgError;
use crate::frame::{ns_payload, parse_frame, parse_ns, write_frame, Frame, NsAnnounce};
use crate::name::Name;
use crate::role::Role;
use zerocopy::IntoBytes;

/// What a received buffer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A name-service message, already applied to [`Node::services`].
    NameService(NsAnnounce),
    /// A create announcement for a service the peer had announced already: the peer restarted
    /// (docs/protocols/rpmsg.md §3). Everything it announced before was forgotten and this
    /// announcement applied to [`Node::services`].
    PeerRestarted(NsAnnounce),
    /// A message for `frame.dst` (which may or may not be bound: the caller decides).
    Message(Frame),
}

/// The endpoint state of one side.
#[derive(Debug)]
pub struct Node {
    role: Role,
    endpoints: EndpointTable,
    services: RemoteServices,
    ns: bool,
}

impl Node {
    /// A node in `role` with room for `endpoints` local endpoints and `services` announced
    /// remote services; `ns` is whether `VIRTIO_RPMSG_F_NS` was negotiated (without it, no
    /// announcements are sent and received ones are refused).
    pub fn new(role: Role, endpoints: usize, services: usize, ns: bool) -> Self {
        Node {
            role,
            endpoints: EndpointTable::new(endpoints),
            services: RemoteServices::new(services),
            ns,
        }
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Local endpoints.
    pub fn endpoints(&self) -> &EndpointTable {
        &self.endpoints
    }

    /// Services the peer announced.
    pub fn services(&self) -> &RemoteServices {
        &self.services
    }

    /// Bind a local endpoint (`ADDR_ANY` allocates); returns its address.
    pub fn bind(&mut self, name: Name, addr: u32) -> Result<u32, RpmsgError> {
        self.endpoints.bind(name, addr)
    }

    /// Unbind a local endpoint.
    pub fn unbind(&mut self, addr: u32) -> Result<Endpoint, RpmsgError> {
        self.endpoints.unbind(addr)
    }

    /// Write into `out` the name-service frame announcing the creation (or destruction) of the
    /// local endpoint at `addr`; returns its length. `None` without the name-service feature.
    pub fn announce(
        &self,
        addr: u32,
        destroy: bool,
        out: &mut [u8],
    ) -> Result<Option<usize>, RpmsgError> {
        if !self.ns {
            return Ok(None);
        }
        let ep = self.endpoints.lookup(addr).ok_or(RpmsgError::NotBound)?;
        let msg = ns_payload(&NsAnnounce {
            name: ep.name,
            addr,
            destroy,
        });
        Ok(Some(write_frame(out, addr, NS_ADDR, msg.as_bytes())?))
    }

    /// Parse a received buffer (a private copy) and apply it if it is a name-service message.
    pub fn receive(&mut self, buf: &[u8]) -> Result<Delivery, RpmsgError> {
        let f = parse_frame(buf)?;
        if f.dst == ADDR_ANY {
            return Err(RpmsgError::BadAddress);
        }
        if f.dst != NS_ADDR {
            return Ok(Delivery::Message(f));
        }
        if !self.ns {
            return Err(RpmsgError::NotBound);
        }
        let a = parse_ns(f.payload(buf))?;
        // A running peer announces each of its endpoints once, when it creates it; a second
        // create of a name it announced before comes from a peer that started again.
        let restarted = !a.destroy && self.services.lookup(&a.name).is_some();
        if restarted {
            log::info!("rpmsg: peer re-announced {:?}: it restarted", a.name);
            self.services.clear();
        }
        self.services.apply(&a)?;
        log::debug!(
            "rpmsg: peer {} {:?} at {}",
            if a.destroy { "destroyed" } else { "announced" },
            a.name,
            a.addr
        );
        Ok(if restarted {
            Delivery::PeerRestarted(a)
        } else {
            Delivery::NameService(a)
        })
    }

    /// The peer was reset: forget what it announced.
    pub fn peer_reset(&mut self) {
        self.services.clear();
    }
}
