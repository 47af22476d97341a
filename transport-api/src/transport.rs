//! The `Transport` trait: the split-phase operations of the Linux SCMI transport ops, generalised
//! to any firmware IPC (send → ticket, non-consuming `poll_done`, `fetch_response`, and
//! `mark_txdone` to end the transfer), plus bulk transfers and unsolicited messages.

use alloc::vec::Vec;
use core::task::Waker;

use crate::stats::Stats;
use crate::Result;

/// Identifies one transfer in flight. Opaque to users: a backend builds it from its own token and
/// slot index (never an address). Not `Clone`: [`Transport::mark_txdone`] consumes it, so a
/// transfer is finished exactly once.
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "a transfer holds a pool buffer and a token until `mark_txdone` ends it"]
pub struct Ticket {
    token: u32,
    slot: u32,
    generation: u32,
}

impl Ticket {
    /// For backends: wrap the backend's token, slot index and slot generation.
    pub const fn new(token: u32, slot: u32, generation: u32) -> Self {
        Ticket {
            token,
            slot,
            generation,
        }
    }
    /// The wire token.
    pub const fn token(&self) -> u32 {
        self.token
    }
    /// The backend slot index.
    pub const fn slot(&self) -> u32 {
        self.slot
    }
    /// The slot generation when the ticket was issued (detects a stale ticket).
    pub const fn generation(&self) -> u32 {
        self.generation
    }
}

/// How a transfer's completion is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Completion {
    /// The embedder's interrupt handler (or the backend's worker) completes transfers and wakes
    /// registered wakers.
    #[default]
    Interrupt,
    /// The caller polls with [`Transport::poll_done`]; the backend may process the queue from
    /// inside `poll_done`.
    Polled,
}

/// A message to send.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Backend-specific destination: an SCMI (protocol << 8 | message) pair, a VCHIQ service
    /// handle, a FastRPC (handle, method) pair...
    pub target: u32,
    /// The payload, without the backend's own framing.
    pub payload: &'a [u8],
    /// Completion mode for this transfer.
    pub completion: Completion,
}

impl<'a> Request<'a> {
    /// A request completed in interrupt mode.
    pub const fn new(target: u32, payload: &'a [u8]) -> Self {
        Request {
            target,
            payload,
            completion: Completion::Interrupt,
        }
    }

    /// The same request in polling mode.
    pub const fn polled(mut self) -> Self {
        self.completion = Completion::Polled;
        self
    }
}

/// How the caller finished with a transfer, for [`Transport::mark_txdone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// The reply was fetched (or the error reply read): release everything.
    Done,
    /// The caller gave up waiting. If the remote still owns the buffer, the backend keeps it (and
    /// the token) until the late reply returns it; the late reply is then dropped and counted.
    TimedOut,
    /// The caller cancelled; treated like `TimedOut` for ownership.
    Cancelled,
}

impl TxOutcome {
    /// The one rule that ends a transfer after waiting for it: `Ok` → [`TxOutcome::Done`],
    /// `Err(Timeout)` → [`TxOutcome::TimedOut`], any other error → [`TxOutcome::Cancelled`].
    ///
    /// ```
    /// use fwipc_transport_api::{Error, TxOutcome};
    /// assert_eq!(TxOutcome::after_wait(&Ok(())), TxOutcome::Done);
    /// assert_eq!(TxOutcome::after_wait(&Err(Error::Timeout)), TxOutcome::TimedOut);
    /// assert_eq!(TxOutcome::after_wait(&Err(Error::Shutdown)), TxOutcome::Cancelled);
    /// ```
    pub fn after_wait(r: &crate::Result<()>) -> Self {
        match r {
            Ok(()) => TxOutcome::Done,
            Err(crate::Error::Timeout) => TxOutcome::TimedOut,
            Err(_) => TxOutcome::Cancelled,
        }
    }
}

/// Direction of a bulk transfer, seen from this (local) side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkDir {
    /// Local → remote.
    Transmit,
    /// Remote → local.
    Receive,
}

/// A bulk transfer: the buffer is moved into the transport for the transfer's whole life, so it
/// can never be freed or reused while the remote may still access it. `range` selects the bytes
/// to move (any offset and length; nothing needs to be cache-line aligned).
#[derive(Debug)]
pub struct BulkRequest {
    /// Backend-specific destination, as in [`Request::target`].
    pub target: u32,
    /// Direction.
    pub dir: BulkDir,
    /// The buffer; returned by [`Transport::take_bulk`].
    pub buf: Vec<u8>,
    /// Start of the bytes to move within `buf`.
    pub offset: usize,
    /// Number of bytes to move.
    pub len: usize,
}

/// A finished bulk transfer.
#[derive(Debug)]
pub struct BulkResult {
    /// The caller's buffer, back (for a receive, with the data in `offset..offset+actual`).
    pub buf: Vec<u8>,
    /// Bytes actually transferred.
    pub actual: usize,
}

/// An unsolicited message (notification, delayed response, remote-initiated message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// Backend-specific source (protocol/message id, service handle...).
    pub source: u32,
    /// Bytes written to the caller's buffer.
    pub len: usize,
}

/// What a transport can do.
///
/// `#[non_exhaustive]`: build it with [`Caps::new`] and the `with_*` setters, so fields can be
/// added without breaking backends. Everything beyond the two sizes starts off.
///
/// ```
/// use fwipc_transport_api::Caps;
/// let c = Caps::new(16, 512).with_polling(true).with_one_way(true);
/// assert!(c.polling && c.one_way && !c.bulk && !c.zero_copy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Caps {
    /// Transfers that may be in flight at once (the pool size).
    pub max_msg: usize,
    /// Largest request/response payload in bytes.
    pub max_msg_size: usize,
    /// Whether [`Transport::bulk`] is implemented.
    pub bulk: bool,
    /// Largest bulk transfer in bytes (0 without bulk).
    pub max_bulk_size: usize,
    /// Whether unsolicited messages are delivered through [`Transport::fetch_notification`].
    pub notifications: bool,
    /// Whether [`Completion::Polled`] transfers are supported.
    pub polling: bool,
    /// Whether the transport implements [`crate::Datagram`] with one-way sends: endpoints and
    /// [`crate::Datagram::send_to`] (docs/datagram.md). A receive-only datagram side (SCMI's P2A
    /// endpoints) implements [`crate::Datagram`] without it.
    pub one_way: bool,
    /// Whether [`crate::Datagram::loan`] / [`crate::Datagram::send_loan`] (zero-copy send) work.
    pub zero_copy: bool,
    /// Whether a received datagram can be held past its callback and released later
    /// ([`crate::RxAction::Hold`], [`crate::Datagram::release_rx`]).
    pub rx_hold: bool,
    /// Whether endpoints can be bound by name ([`crate::Bind::Name`]) as well as by address.
    pub endpoints: bool,
    /// Whether the remote announces and destroys named endpoints ([`crate::EndpointEvent`]).
    pub name_service: bool,
}

impl Caps {
    /// A request/reply transport with `max_msg` transfers of up to `max_msg_size` bytes in
    /// flight, and no optional feature.
    pub const fn new(max_msg: usize, max_msg_size: usize) -> Self {
        Caps {
            max_msg,
            max_msg_size,
            bulk: false,
            max_bulk_size: 0,
            notifications: false,
            polling: false,
            one_way: false,
            zero_copy: false,
            rx_hold: false,
            endpoints: false,
            name_service: false,
        }
    }

    /// Bulk transfers of up to `max_bulk_size` bytes (0 turns bulk off).
    pub const fn with_bulk(mut self, max_bulk_size: usize) -> Self {
        self.bulk = max_bulk_size > 0;
        self.max_bulk_size = max_bulk_size;
        self
    }

    /// Sets [`Caps::notifications`].
    pub const fn with_notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Sets [`Caps::polling`].
    pub const fn with_polling(mut self, on: bool) -> Self {
        self.polling = on;
        self
    }

    /// Sets [`Caps::one_way`].
    pub const fn with_one_way(mut self, on: bool) -> Self {
        self.one_way = on;
        self
    }

    /// Sets [`Caps::zero_copy`].
    pub const fn with_zero_copy(mut self, on: bool) -> Self {
        self.zero_copy = on;
        self
    }

    /// Sets [`Caps::rx_hold`].
    pub const fn with_rx_hold(mut self, on: bool) -> Self {
        self.rx_hold = on;
        self
    }

    /// Sets [`Caps::endpoints`].
    pub const fn with_endpoints(mut self, on: bool) -> Self {
        self.endpoints = on;
        self
    }

    /// Sets [`Caps::name_service`].
    pub const fn with_name_service(mut self, on: bool) -> Self {
        self.name_service = on;
        self
    }
}

/// A firmware IPC transport. All methods take `&self`: a transport is shared by many threads, and
/// synchronises internally. No method blocks; waiting is the caller's choice (see [`crate::call`]).
pub trait Transport: Send + Sync {
    /// Capacities and features.
    fn caps(&self) -> Caps;

    /// Transfers that may be in flight at once.
    fn max_msg(&self) -> usize {
        self.caps().max_msg
    }

    /// Largest payload in bytes.
    fn max_msg_size(&self) -> usize {
        self.caps().max_msg_size
    }

    /// Queue a message. `Busy` when no buffer or token is free, `TooLarge` when the payload does
    /// not fit, `Shutdown` after shutdown began. Never blocks, never allocates.
    #[must_use = "the ticket must be waited on and ended with `mark_txdone`"]
    fn send(&self, req: &Request<'_>) -> Result<Ticket>;

    /// Whether the reply (or bulk completion) for `ticket` has arrived. Does not consume it.
    /// `Err(Shutdown)` if the channel went down with the transfer in flight, `Err(Cancelled)` if
    /// the remote aborted it.
    fn poll_done(&self, ticket: &Ticket) -> Result<bool>;

    /// Copy the reply payload into `out`; returns its length. `Err(Remote(status))` for a
    /// non-success reply, `TooLarge` if `out` is too small, `InvalidArgument` if not done yet.
    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize>;

    /// The caller is finished with the transfer. See [`TxOutcome`] for what happens to buffers the
    /// remote still owns.
    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome);

    /// Ask to be woken when `ticket` completes. Returns `false` if this transport never wakes
    /// (caller must keep polling). The default never wakes.
    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        let _ = (ticket, waker);
        false
    }

    /// A hint from a caller waiting on `ticket` ([`crate::wait_done`]): `true` when it starts
    /// spinning on [`Transport::poll_done`] (before its first poll, so a reply that comes at
    /// once finds the hint), `false` when it stops (before it relaxes, registers
    /// a waker or parks, and when the wait ends), in pairs; several callers may spin at once.
    /// While one spins, a transport whose remote would interrupt for the reply may ask it not to:
    /// the spinning caller takes the reply itself, and the interrupt's work (on another core, or
    /// on the caller's own between two of its polls) would be for nothing. On the last `false` it
    /// asks for interrupts again and takes what arrived meanwhile, completing and waking as the
    /// interrupt would have, so a waiter that then sleeps on the interrupt (a waker, or WFE)
    /// misses nothing. The default ignores it.
    fn spinning(&self, ticket: &Ticket, on: bool) {
        let _ = (ticket, on);
    }

    /// Start a bulk transfer; complete it with `poll_done` then [`Transport::take_bulk`].
    fn bulk(&self, req: BulkRequest) -> core::result::Result<Ticket, (crate::Error, BulkRequest)> {
        Err((crate::Error::NotSupported, req))
    }

    /// Take a finished bulk transfer's buffer back and end the transfer. If not finished, the
    /// ticket is returned with the error.
    fn take_bulk(
        &self,
        ticket: Ticket,
    ) -> core::result::Result<BulkResult, (crate::Error, Ticket)> {
        Err((crate::Error::NotSupported, ticket))
    }

    /// The next unsolicited message, copied into `out`, if any.
    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        let _ = out;
        Ok(None)
    }

    /// Stop the channel: refuse new transfers, complete every in-flight transfer with
    /// `Shutdown`, wait (bounded) for the last user, release every buffer. Idempotent.
    fn shutdown(&self) -> Result<()>;

    /// Counters and pool occupancy.
    fn stats(&self) -> Stats;
}
