//! [`RpmsgTransport`]: request/reply calls and unsolicited messages over rpmsg, driver role.
//!
//! rpmsg carries datagrams between endpoint addresses and has no transfer id. A call is mapped
//! onto it the way an rpmsg client does it by hand: each transfer gets its own reply address,
//! [`TRANSFER_ADDR_BASE`] + its token, sends from it to the target endpoint, and the peer answers
//! to the source address it received. A reply is accepted only if it arrives at the address of a
//! transfer in flight **and** comes from the endpoint that transfer addressed. The transfer's
//! pool buffer is the landing place of the reply: it stays lent to the peer (and the token
//! reserved) until the reply arrives, the peer is reset, or the transport shuts down, so a
//! late reply can never land in a reused transfer. Messages to the bound notification endpoint
//! are delivered through [`Transport::fetch_notification`].

use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::Waker;
use core::time::Duration;

use fwipc_transport_api::{
    Caps, Clock, Counters, Deadline, Error, Lifecycle, Notification, Request, Result, Spinners,
    Stats, Ticket, TransferTable, Transport, TxOutcome,
};
use spin::Mutex;

use crate::addr::{ADDR_ANY, BUF_SIZE, MAX_PAYLOAD, NS_ADDR, TRANSFER_ADDR_BASE};
use crate::error::RpmsgError;
use crate::hdr::RpmsgHdr;
use crate::link::{Link, LinkError};
use crate::name::Name;
use crate::node::{Delivery, Node};
use crate::role::Role;

mod datagram;
pub use datagram::DGRAM_RX_BUFS;

/// Width of transfer tokens: 4096 reply addresses, handed out in a monotonic cycle so a
/// just-finished transfer's address is not reused at once.
const TOKEN_BITS: u32 = 12;
/// Name of the local endpoint that receives unsolicited messages.
pub const NOTIFY_NAME: &[u8] = b"fwipc-notify";

/// Sizes fixed at setup.
#[derive(Debug, Clone, Copy)]
pub struct RpmsgConfig {
    /// Transfers in flight at once (pool size).
    pub max_msg: usize,
    /// Local endpoints.
    pub endpoints: usize,
    /// Services the peer may announce.
    pub services: usize,
    /// Unsolicited messages queued before new ones are dropped (and counted).
    pub notifications: usize,
    /// Received frames handled per call of [`RpmsgTransport::handle_interrupt`] or `poll_done`.
    pub rx_budget: usize,
    /// Whether `VIRTIO_RPMSG_F_NS` was negotiated.
    pub name_service: bool,
    /// Interrupt mode: the embedder calls [`RpmsgTransport::handle_interrupt`] and wakers are
    /// woken; otherwise completion is found by `poll_done`.
    pub interrupts: bool,
}

impl Default for RpmsgConfig {
    fn default() -> Self {
        RpmsgConfig {
            max_msg: 64,
            endpoints: 16,
            services: 16,
            notifications: 32,
            rx_budget: 64,
            name_service: true,
            interrupts: true,
        }
    }
}

struct Note {
    src: u32,
    len: usize,
    data: [u8; MAX_PAYLOAD],
}

/// The rpmsg transport over a [`Link`], with clock `C` for bounded teardown.
pub struct RpmsgTransport<L: Link, C: Clock> {
    link: L,
    clock: C,
    cfg: RpmsgConfig,
    node: Mutex<Node>,
    notify_addr: u32,
    /// The transfers; each entry's part is the endpoint its request went to, the only source
    /// a reply is accepted from.
    table: TransferTable<u32>,
    lc: Lifecycle,
    notes: Mutex<VecDeque<Note>>,
    notes_dropped: AtomicU64,
    peer_resets: AtomicU64,
    /// Serialises receive processing so frames are handled in arrival order. Holds the number
    /// of callers spinning now ([`Transport::spinning`]), while any of which the link asks for no
    /// receive interrupt.
    rx: Mutex<Spinners>,
    /// Datagram endpoints (`transport/datagram.rs`).
    dgram: datagram::DgramSide,
}

impl<L: Link, C: Clock> core::fmt::Debug for RpmsgTransport<L, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RpmsgTransport")
            .field("cfg", &self.cfg)
            .field("notify_addr", &self.notify_addr)
            .finish_non_exhaustive()
    }
}

impl<L: Link, C: Clock> RpmsgTransport<L, C> {
    /// Set up over `link` (already negotiated and with receive buffers posted): binds the
    /// notification endpoint and announces it if the name service is on.
    pub fn new(link: L, clock: C, cfg: RpmsgConfig) -> core::result::Result<Self, Error> {
        let mut node = Node::new(
            Role::Driver,
            cfg.endpoints.max(1),
            cfg.services,
            cfg.name_service,
        );
        let name = Name::new(NOTIFY_NAME).map_err(RpmsgError::from)?;
        let notify_addr = node.bind(name, ADDR_ANY)?;
        let t = RpmsgTransport {
            link,
            clock,
            cfg,
            node: Mutex::new(node),
            notify_addr,
            table: TransferTable::new(cfg.max_msg, MAX_PAYLOAD, TOKEN_BITS)?,
            lc: Lifecycle::new(),
            notes: Mutex::new(VecDeque::with_capacity(cfg.notifications)),
            notes_dropped: AtomicU64::new(0),
            peer_resets: AtomicU64::new(0),
            rx: Mutex::new(Spinners::new()),
            dgram: datagram::DgramSide::new(cfg.endpoints)?,
        };
        t.announce(notify_addr, false)?;
        Ok(t)
    }

    /// Send the name-service announcement of local endpoint `addr` (nothing without the name
    /// service).
    fn announce(&self, addr: u32, destroy: bool) -> Result<()> {
        let mut frame = [0u8; BUF_SIZE];
        let n = self.node.lock().announce(addr, destroy, &mut frame)?;
        if let Some(n) = n {
            self.link.send(&frame[..n]).map_err(link_err)?;
        }
        Ok(())
    }

    /// The link under the transport.
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The address of the local endpoint that receives unsolicited messages.
    pub fn notify_addr(&self) -> u32 {
        self.notify_addr
    }

    /// The address the peer announced for service `name`, if it did.
    pub fn service(&self, name: &[u8]) -> Option<u32> {
        let name = Name::new(name).ok()?;
        self.node.lock().services().lookup(&name)
    }

    /// Unsolicited messages dropped because the queue was full.
    pub fn notifications_dropped(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.notes_dropped.load(Ordering::Relaxed)
    }

    /// The interrupt entry point (and the polled path): take what the peer sent, at most
    /// [`RpmsgConfig::rx_budget`] frames per call.
    pub fn handle_interrupt(&self) {
        let _rx = self.rx.lock();
        let budget = self.dgram.rx_room(self.cfg.rx_budget);
        self.link.receive(budget, &mut |frame| self.on_frame(frame));
        if self.link.take_device_reset() {
            // The link reset the device (it reported `DEVICE_NEEDS_RESET`) and took every
            // buffer back. The remote's rpmsg device state goes with it (a remote built on
            // OpenAMP sets its endpoints up again and re-announces them once the device runs
            // again), so this is a peer reset: see `peer_reset`.
            log::warn!("rpmsg: the device was reset; transfers in flight are cancelled");
            self.peer_reset();
        }
    }

    /// The peer was reset (an embedder that learns it from its remote-processor framework
    /// calls this; a peer that re-announces a service does the same, see [`Delivery`]): its
    /// announcements are void and it answers nothing sent before, so every transfer in flight
    /// fails with [`Error::Cancelled`] and every abandoned one (timed out or dropped by its
    /// caller) gives its pool buffer and reply address back.
    pub fn peer_reset(&self) {
        self.node.lock().peer_reset();
        self.cancel_transfers();
    }

    /// How often the peer was reset ([`RpmsgTransport::peer_reset`] or a re-announcement).
    pub fn peer_resets(&self) -> u64 {
        // Relaxed: statistics counter only.
        self.peer_resets.load(Ordering::Relaxed)
    }

    /// The peer lost every transfer sent before: end them all.
    fn cancel_transfers(&self) {
        // Relaxed: statistics counter only.
        self.peer_resets.fetch_add(1, Ordering::Relaxed);
        self.table.fail_all(Error::Cancelled);
    }

    fn on_frame(&self, frame: &[u8]) {
        let d = self.node.lock().receive(frame);
        match d {
            Ok(Delivery::NameService(a)) => self.dgram.on_ns(&a),
            Ok(Delivery::PeerRestarted(a)) => {
                self.cancel_transfers();
                self.dgram.on_ns(&a);
            }
            Ok(Delivery::Message(f)) => {
                let payload = f.payload(frame);
                if f.dst == self.notify_addr {
                    self.queue_note(f.src, payload);
                } else if f.dst >= TRANSFER_ADDR_BASE {
                    self.on_reply(f.dst - TRANSFER_ADDR_BASE, f.src, payload);
                } else if !self.dgram.deliver(f.src, f.dst, payload) {
                    log::debug!("rpmsg: message for unbound address {}", f.dst);
                    Counters::bump(&self.table.counters().unknown_replies);
                }
            }
            Err(RpmsgError::Wire(e)) => {
                log::debug!("rpmsg: dropped a malformed frame: {e}");
                Counters::bump(&self.table.counters().protocol_errors);
            }
            Err(e) => {
                log::debug!("rpmsg: dropped a frame: {e}");
                Counters::bump(&self.table.counters().protocol_errors);
            }
        }
    }

    fn queue_note(&self, src: u32, payload: &[u8]) {
        let mut q = self.notes.lock();
        if q.len() >= self.cfg.notifications {
            // Relaxed: statistics counter only.
            self.notes_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut n = Note {
            src,
            len: payload.len(),
            data: [0; MAX_PAYLOAD],
        };
        // `payload` came from a parsed frame: at most MAX_PAYLOAD bytes.
        n.data[..payload.len()].copy_from_slice(payload);
        q.push_back(n);
    }

    fn on_reply(&self, token: u32, src: u32, payload: &[u8]) {
        self.table.on_reply(
            token,
            // Not from the endpoint addressed: a stray or forged message.
            |target| src == *target,
            |buf, _| buf.write(payload).map(|()| payload.len()),
        );
    }
}

fn link_err(e: LinkError) -> Error {
    match e {
        LinkError::NoBuffer => Error::Retry,
        LinkError::Down => Error::Shutdown,
        LinkError::Unsupported => Error::NotSupported,
    }
}

impl<L: Link, C: Clock + Send> Transport for RpmsgTransport<L, C> {
    fn caps(&self) -> Caps {
        Caps::new(self.cfg.max_msg, MAX_PAYLOAD)
            .with_notifications(true)
            .with_polling(true)
            .with_one_way(true)
            .with_zero_copy(true)
            .with_rx_hold(true)
            .with_endpoints(true)
            .with_name_service(self.cfg.name_service)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let _user = self.lc.acquire()?;
        if req.payload.len() > MAX_PAYLOAD {
            return Err(Error::TooLarge);
        }
        if req.target == ADDR_ANY || req.target == NS_ADDR || req.target >= TRANSFER_ADDR_BASE {
            return Err(Error::InvalidArgument);
        }
        // The peer now holds the reply address (and with it the landing buffer).
        let started = self.table.start(&[], req.target)?;
        // The header and the payload go to the link as they are: no frame is assembled here.
        let hdr = RpmsgHdr::new(
            TRANSFER_ADDR_BASE + started.token.0,
            req.target,
            // At most MAX_PAYLOAD (checked above).
            req.payload.len() as u16,
        );
        let sent = self
            .link
            .send_parts(&hdr.to_bytes(), req.payload)
            .map_err(link_err);
        if let Err(e) = sent {
            self.table.abort(started);
            return Err(e);
        }
        // Counted as sent by the table (`TransferTable::start_with`; `abort` above takes it off).
        Ok(started.ticket())
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        self.handle_interrupt();
        self.table.poll(ticket)
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        self.table.fetch(ticket, out)
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        // An abandoned transfer keeps its reply address and buffer: the peer may still answer.
        let (token, slot) = (ticket.token(), ticket.slot());
        if self.table.finish(ticket, outcome).is_err() {
            log::warn!("rpmsg: mark_txdone on a stale ticket (token {token}, slot {slot})");
        }
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        if !self.cfg.interrupts {
            return false;
        }
        self.table.register_waker(ticket, waker)
    }

    /// While any caller spins, the link asks for no receive interrupt (the spinners receive in
    /// `poll_done`, completing every caller's transfer there); when the last one stops, it asks
    /// again and what arrived meanwhile, which raised none, is received here.
    fn spinning(&self, _ticket: &Ticket, on: bool) {
        // Without interrupts nobody asks for any.
        if !self.cfg.interrupts {
            return;
        }
        let mut spinners = self.rx.lock();
        if on {
            if spinners.enter() {
                self.link.pause_interrupts();
            }
            return;
        }
        let waiting = spinners.leave() && self.link.resume_interrupts();
        drop(spinners);
        if waiting {
            self.handle_interrupt();
        }
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        self.handle_interrupt();
        let mut q = self.notes.lock();
        let Some(n) = q.front() else {
            return Ok(None);
        };
        let dst = out.get_mut(..n.len).ok_or(Error::TooLarge)?;
        dst.copy_from_slice(&n.data[..n.len]);
        let r = Notification {
            source: n.src,
            len: n.len,
        };
        q.pop_front();
        Ok(Some(r))
    }

    fn shutdown(&self) -> Result<()> {
        let deadline = Deadline::after(&self.clock, Duration::from_secs(2));
        let wait = fwipc_transport_api::Wait::Poll;
        if !self.lc.begin_shutdown() {
            return self.lc.wait_idle(&self.clock, deadline, wait);
        }
        // Tell the peer the notification endpoint is gone (best effort: the link may be down
        // already), then take every buffer back from it (the device reset).
        let _ = self.announce(self.notify_addr, true);
        self.link.reset();
        self.dgram.reset();
        self.lc.drain(&self.clock, deadline, wait, || {
            self.table.fail_all(Error::Shutdown)
        })
    }

    fn stats(&self) -> Stats {
        let mut s = self.table.stats();
        s.protocol_errors += self.link.faults();
        s
    }
}
