//! [`Datagram`] for [`ScmiVirtio`]: the P2A messages of one SCMI protocol (notifications and
//! delayed responses, SCMI §4.1.1; they arrive on the eventq) as a receive-only datagram
//! endpoint. docs/datagram.md describes the model.
//!
//! An endpoint is bound at a protocol id ([`Bind::Addr`], 0x10..=0xFF), or at the lowest free id
//! of the vendor range 0x80..=0xFF ([`Bind::Any`]). SCMI has no endpoint names
//! ([`Bind::Name`] is `NotSupported`) and the agent never sends P2A messages: `send_to` is
//! `NotSupported` (the platform emits notifications). A received datagram's source
//! ([`fwipc_transport_api::Rx::src`]) is the message's whole header word (message id, type,
//! protocol, token), so a notification and a delayed response of the same protocol can be told
//! apart.
//!
//! Receive: [`Datagram::poll_rx`] takes the eventq buffers the device returned, and copies the
//! queued messages of protocols with a bound endpoint, oldest first, into a receive pool of
//! [`DGRAM_RX_BUFS`] private buffers of `max_msg_size` bytes, re-posting each eventq buffer, then
//! shows them to the callback. With every receive buffer taken (held by the user, or queued and
//! not yet polled) the messages stay in their eventq buffers, which are not re-posted: once all
//! are used the device has nowhere to write (back-pressure, counted in
//! [`DatagramStats::rx_backpressure`]). Nothing received is lost; the device holds a delayed
//! response until a buffer appears but may drop or merge notifications meanwhile (Virtio 1.2
//! §5.17.6.3), as whenever the eventq runs dry. Messages of protocols with no bound
//! endpoint stay for [`fwipc_transport_api::Transport::fetch_notification`], which no longer
//! returns those of bound protocols. A payload longer than `max_msg_size` (possible when
//! `eventq_buf_size` is larger) is dropped and counted in [`DatagramStats::dropped`], so
//! [`Datagram::recv`] with a `max_msg_size` buffer always fits.

use fwipc_transport_api::{
    Bind, Counters, Datagram, DatagramCounters, DatagramStats, Endpoint, EndpointQueues, Error,
    HoldTable, MsgPool, Result, Rx, RxAction, RxHold,
};
use virtio_drivers::transport::Transport as VirtioTransport;
use virtio_drivers::Hal;

use super::ScmiVirtio;
use crate::header::Header;
use crate::virtio::features::{ScmiFeatures, EVENTQ};

/// Receive buffers for datagram endpoints: how many messages can wait for (or be held by) the
/// user before the eventq stops being re-posted.
pub const DGRAM_RX_BUFS: usize = 16;
/// Endpoints bound at once.
pub const DGRAM_ENDPOINTS: usize = 8;
/// Lowest protocol id an endpoint binds: Base (SCMI §4.2).
const PROTO_MIN: u32 = 0x10;
/// First protocol id of the vendor range (SCMI §4.1.1), where [`Bind::Any`] picks.
const PROTO_VENDOR: u32 = 0x80;
/// Highest protocol id (8 bits).
const PROTO_MAX: u32 = 0xFF;

/// The datagram side of [`ScmiVirtio`], allocated at setup.
pub(super) struct ScmiDgram {
    endpoints: EndpointQueues,
    holds: HoldTable,
    pool: MsgPool,
    counters: DatagramCounters,
}

impl ScmiDgram {
    /// Receive buffers of `max_msg_size` bytes. `InvalidArgument` for a size of 0.
    pub(super) fn new(max_msg_size: usize) -> Result<Self> {
        Ok(ScmiDgram {
            endpoints: EndpointQueues::new(DGRAM_ENDPOINTS, DGRAM_RX_BUFS),
            holds: HoldTable::new(DGRAM_RX_BUFS),
            pool: MsgPool::new(DGRAM_RX_BUFS, max_msg_size)?,
            counters: DatagramCounters::default(),
        })
    }

    /// Whether the eventq message with header word `hdr` belongs to a bound endpoint.
    pub(super) fn claims(&self, hdr: u32) -> bool {
        protocol_of(hdr).is_some_and(|p| self.endpoints.is_bound(p))
    }
}

/// The protocol id of a header word `check_event_header` accepted.
fn protocol_of(hdr: u32) -> Option<u32> {
    Header::decode(hdr).ok().map(|h| u32::from(h.protocol_id))
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Whether the eventq exists (P2A negotiated): the datagram side works only then.
    fn has_eventq(&self) -> bool {
        self.features.contains(ScmiFeatures::P2A_CHANNELS)
    }

    /// Take what the device returned on the eventq and move the messages of bound protocols,
    /// oldest first, into receive buffers queued on their endpoints, while receive buffers are
    /// free. Bounded: at most one message per eventq buffer.
    fn pump_events(&self) {
        self.with_eventq(|q, transport| {
            let d = &self.dgram;
            let mut reposted = false;
            for _ in 0..q.count() {
                let Some(pos) = q.position(|hdr| d.claims(hdr)) else {
                    break;
                };
                let Ok(buf) = d.pool.alloc() else {
                    // Every receive buffer is taken: the message stays in its eventq buffer.
                    Counters::bump(&d.counters.rx_backpressure);
                    break;
                };
                match buf.with_mut(|b| q.pop_at(pos, b)) {
                    Some(Ok((hdr, n))) => {
                        reposted = true;
                        let queued = match (buf.set_len(n), protocol_of(hdr)) {
                            (Ok(()), Some(p)) => d.endpoints.push(p, hdr, buf).is_ok(),
                            _ => false,
                        };
                        Counters::bump(if queued {
                            &d.counters.received
                        } else {
                            &d.counters.dropped
                        });
                    }
                    Some(Err(needed)) => {
                        log::warn!(
                            "virtio-scmi: eventq message of {needed} bytes is longer than a \
                             datagram receive buffer; dropped"
                        );
                        q.discard_at(pos);
                        reposted = true;
                        Counters::bump(&d.counters.dropped);
                    }
                    None => break,
                }
            }
            if reposted && q.ring.should_notify() {
                transport.notify(EVENTQ);
            }
        });
    }
}

impl<H: Hal, T: VirtioTransport + Send> Datagram for ScmiVirtio<H, T> {
    fn bind(&self, how: Bind<'_>) -> Result<Endpoint> {
        let _g = self.lc.acquire()?;
        if !self.has_eventq() {
            return Err(Error::NotSupported);
        }
        let eps = &self.dgram.endpoints;
        match how {
            Bind::Addr(p) if (PROTO_MIN..=PROTO_MAX).contains(&p) => eps.bind(p),
            Bind::Addr(_) => Err(Error::InvalidArgument),
            Bind::Any => {
                for p in PROTO_VENDOR..=PROTO_MAX {
                    match eps.bind(p) {
                        Err(Error::InvalidArgument) => continue,
                        r => return r,
                    }
                }
                Err(Error::Busy)
            }
            Bind::Name(_) => Err(Error::NotSupported),
        }
    }

    fn unbind(&self, ep: Endpoint) -> Result<()> {
        self.dgram.endpoints.unbind(&ep)
    }

    fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()> {
        // P2A messages come from the platform; the agent has no one-way send (Caps::one_way).
        let _ = (ep, dst, payload);
        Err(Error::NotSupported)
    }

    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize> {
        {
            let _g = self.lc.acquire()?;
            self.dgram.endpoints.check(ep)?;
            self.pump_events();
        }
        let d = &self.dgram;
        // A buffer released by `f` is back in the pool; the next poll re-posts what waits.
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
