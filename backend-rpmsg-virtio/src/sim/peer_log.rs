//! What the simulated remote's datagram endpoint received: the messages for [`PEER_ADDR`] and
//! the name-service messages the driver sent. Fixed capacity, reserved at setup.

use std::collections::VecDeque;
use std::sync::Mutex;

use fwipc_transport_api::EndpointName;

use crate::addr::MAX_PAYLOAD;
use crate::frame::NsAnnounce;

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

    /// The messages logged so far, oldest first, as (source, payload); cleared by reading.
    pub(crate) fn take_messages(&self) -> Vec<(u32, Vec<u8>)> {
        let got: Vec<Logged> = lock(&self.rx).drain(..).collect();
        got.into_iter()
            .map(|(src, n, data)| (src, data[..n].to_vec()))
            .collect()
    }

    /// The name-service messages logged so far; cleared by reading.
    pub(crate) fn take_ns(&self) -> Vec<(EndpointName, u32, bool)> {
        lock(&self.ns).drain(..).collect()
    }

    /// A name-service message the remote received.
    pub(crate) fn on_ns(&self, a: &NsAnnounce) {
        let mut q = lock(&self.ns);
        if let (true, Ok(name)) = (q.len() < LOG_MAX, EndpointName::new(a.name.as_bytes())) {
            q.push((name, a.addr, a.destroy));
        }
    }
}
