//! The simulated remote's datagram endpoint ([`DatagramPeer`] for the conformance suite): a
//! fixed-address endpoint that logs what it receives, sends one-way messages through the same
//! device-end link as everything else, and logs the name-service messages the driver sends.

use std::collections::VecDeque;
use std::sync::Mutex;

use fwipc_transport_api::fixture::DatagramPeer;
use fwipc_transport_api::{EndpointName, Error, Result};

use super::remote::SimRemote;
use crate::addr::{BUF_SIZE, MAX_PAYLOAD};
use crate::frame::{write_frame, NsAnnounce};
use crate::link::{Link, LinkError};

/// The remote's datagram endpoint address (a fixed service address below the dynamic range).
pub const PEER_ADDR: u32 = 0x300;
/// Messages (and name-service messages) logged between two reads; more are dropped.
const LOG_MAX: usize = 512;

type Logged = (u32, usize, [u8; MAX_PAYLOAD]);

/// What the remote's datagram endpoint received. Capacity reserved at setup.
pub(crate) struct PeerLog {
    rx: Mutex<VecDeque<Logged>>,
    ns: Mutex<Vec<(EndpointName, u32, bool)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PeerLog {
    pub(crate) fn new() -> Self {
        PeerLog {
            rx: Mutex::new(VecDeque::with_capacity(LOG_MAX)),
            ns: Mutex::new(Vec::with_capacity(LOG_MAX)),
        }
    }

    /// A message the remote received: `true` (and logged) if it is for [`PEER_ADDR`].
    pub(crate) fn on_message(&self, src: u32, dst: u32, payload: &[u8]) -> bool {
        if dst != PEER_ADDR {
            return false;
        }
        let mut q = lock(&self.rx);
        if q.len() < LOG_MAX {
            let mut data = [0u8; MAX_PAYLOAD];
            let n = payload.len().min(MAX_PAYLOAD);
            data[..n].copy_from_slice(&payload[..n]);
            q.push_back((src, n, data));
        }
        true
    }

    /// A name-service message the remote received.
    pub(crate) fn on_ns(&self, a: &NsAnnounce) {
        let mut q = lock(&self.ns);
        if let (true, Ok(name)) = (q.len() < LOG_MAX, EndpointName::new(a.name.as_bytes())) {
            q.push((name, a.addr, a.destroy));
        }
    }
}

impl DatagramPeer for SimRemote {
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
        let got: Vec<Logged> = lock(&self.peer.rx).drain(..).collect();
        got.into_iter()
            .map(|(src, n, data)| (src, data[..n].to_vec()))
            .collect()
    }

    fn announce(&self, name: &[u8]) -> Option<u32> {
        self.bind_service(name)
    }

    fn destroy(&self, addr: u32) -> bool {
        self.unbind_service(addr)
    }

    fn take_announcements(&self) -> Vec<(EndpointName, u32, bool)> {
        lock(&self.peer.ns).drain(..).collect()
    }
}
