//! The simulated remote's datagram endpoint ([`DatagramPeer`] for the conformance suite): sends
//! one-way messages through the same device-end link as everything else, and reads what
//! [`super::peer_log`] recorded.

use fwipc_transport_api::fixture::DatagramPeer;
use fwipc_transport_api::{EndpointName, Error, Result};

use super::peer_log::PEER_ADDR;
use super::remote::SimRemote;
use super::remote_end::RemoteEnd;
use crate::addr::BUF_SIZE;
use crate::frame::write_frame;
use crate::link::LinkError;

impl<E: RemoteEnd> DatagramPeer for SimRemote<E> {
    fn addr(&self) -> u32 {
        PEER_ADDR
    }

    fn send(&self, dst: u32, payload: &[u8]) -> Result<()> {
        let mut buf = [0u8; BUF_SIZE];
        let n = write_frame(&mut buf, PEER_ADDR, dst, payload).map_err(|_| Error::TooLarge)?;
        self.end.send(&buf[..n]).map_err(|e| match e {
            // The driver's receive ring is full: it has stopped taking frames.
            LinkError::NoBuffer => Error::Retry,
            _ => Error::Shutdown,
        })
    }

    fn take_received(&self) -> Vec<(u32, Vec<u8>)> {
        self.peer.take_messages()
    }

    fn announce(&self, name: &[u8]) -> Option<u32> {
        self.bind_service(name)
    }

    fn destroy(&self, addr: u32) -> bool {
        self.unbind_service(addr)
    }

    fn take_announcements(&self) -> Vec<(EndpointName, u32, bool)> {
        self.peer.take_ns()
    }
}
