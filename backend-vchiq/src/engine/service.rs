//! Services as a user sees them: handles, parameters, the events a handler receives and what it
//! answers. The handler trait itself ([`crate::ServiceHandler`]) and the private per-port records
//! live with the instance in `vchiq.rs`, because a handler is called with the instance.

use alloc::vec::Vec;

use crate::error::VchiqError;
use crate::wire::consts::Reason;
pub use fwipc_transport_api::BulkDir;

/// An opaque service handle: `seq << 12 | port`. Local only; never an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceHandle(pub(crate) u32);

impl ServiceHandle {
    /// The raw value (for `Request::target`).
    pub const fn raw(self) -> u32 {
        self.0
    }
    /// Rebuild from [`ServiceHandle::raw`]; validated on every use.
    pub const fn from_raw(v: u32) -> Self {
        ServiceHandle(v)
    }
    pub(crate) fn port(self) -> usize {
        (self.0 & 0xFFF) as usize
    }
}

/// What to open or offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceParams {
    /// Service fourcc ([`crate::wire::consts::make_fourcc`]); 0 is invalid.
    pub fourcc: u32,
    /// Our service version.
    pub version: i16,
    /// Oldest peer version we accept.
    pub version_min: i16,
    /// Server: go back to LISTENING when a client closes (default true); else CLOSEWAIT.
    pub auto_close: bool,
    /// Server: open clients in synchronous mode (through the sync slots; needs common version ≥ 8).
    pub synchronous: bool,
    /// Slot quota (0 = default, slots/2).
    pub slot_quota: u32,
    /// Message quota (0 = default).
    pub message_quota: u32,
}

impl ServiceParams {
    /// `fourcc`, version 0/0, auto-close, default quotas.
    pub const fn new(fourcc: u32) -> Self {
        ServiceParams {
            fourcc,
            version: 0,
            version_min: 0,
            auto_close: true,
            synchronous: false,
            slot_quota: 0,
            message_quota: 0,
        }
    }
    /// With versions.
    pub const fn version(mut self, version: i16, version_min: i16) -> Self {
        self.version = version;
        self.version_min = version_min;
        self
    }
    /// With the SYNCHRONOUS option.
    pub const fn synchronous(mut self, on: bool) -> Self {
        self.synchronous = on;
        self
    }
    /// With AUTOCLOSE.
    pub const fn auto_close(mut self, on: bool) -> Self {
        self.auto_close = on;
        self
    }
    /// With quotas (0 = default).
    pub const fn quotas(mut self, slot_quota: u32, message_quota: u32) -> Self {
        self.slot_quota = slot_quota;
        self.message_quota = message_quota;
        self
    }
}

/// A received message, lent to the handler for the duration of the callback.
#[derive(Debug)]
pub struct Message<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) token: MessageToken,
}

impl Message<'_> {
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        self.payload
    }
    /// The token to pass to [`crate::Vchiq::release_message`] if the handler returns
    /// [`Deliver::Hold`].
    pub fn token(&self) -> MessageToken {
        self.token
    }
}

/// Names a held message for [`crate::Vchiq::release_message`]. Opaque (slot index and offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageToken {
    pub(crate) slot: u32,
    pub(crate) offset: u32,
    pub(crate) handle: ServiceHandle,
    pub(crate) sync: bool,
}

/// A finished bulk transfer: the buffer comes back with the result.
#[derive(Debug)]
#[non_exhaustive]
pub struct BulkCompletion {
    /// Direction, from this side.
    pub dir: BulkDir,
    /// The submitter's tag.
    pub tag: u64,
    /// The buffer, back (for a receive, data in `offset..offset+actual`).
    pub buf: Vec<u8>,
    /// Bytes transferred, or [`VchiqError::Aborted`].
    pub result: Result<usize, VchiqError>,
}

/// A callback event.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The service opened (client: OPENACK; server: a client connected).
    Opened,
    /// The service closed (or an open was refused).
    Closed,
    /// A message arrived (MESSAGE_AVAILABLE).
    Message(Message<'a>),
    /// A callback-mode bulk completed or was aborted.
    Bulk(BulkCompletion),
    /// Transmit resources came back (recycled slots and the message/slot/data quota they held,
    /// our sync slot released by the peer, a bulk queue entry or pagelist freed) after this
    /// service was refused with [`VchiqError::Retry`]. Delivered once per refusal episode from
    /// [`crate::Vchiq::poll`], so a handler that must not block (a VideoCore-side service with deferred
    /// replies) can retry then instead of polling. Trying again may still return `Retry` (another
    /// sender took the space); a later `TxSpace` follows when more comes back.
    TxSpace,
    /// Master role: the peer queued a bulk (`dir` is the *local* direction needed to pair it) and
    /// no local bulk is waiting for it. A VideoCore-side service can queue one now.
    RemoteBulkPending {
        /// Local direction that would pair with the peer's request.
        dir: BulkDir,
        /// The peer's size.
        size: usize,
    },
}

impl Event<'_> {
    /// The C API callback reason, where one exists.
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Event::Opened => Reason::ServiceOpened,
            Event::Closed => Reason::ServiceClosed,
            Event::Message(_) => Reason::MessageAvailable,
            Event::Bulk(c) => match (c.dir, c.result.is_ok()) {
                (BulkDir::Transmit, true) => Reason::BulkTransmitDone,
                (BulkDir::Receive, true) => Reason::BulkReceiveDone,
                (BulkDir::Transmit, false) => Reason::BulkTransmitAborted,
                (BulkDir::Receive, false) => Reason::BulkReceiveAborted,
            },
            Event::RemoteBulkPending { .. } | Event::TxSpace => return None,
        })
    }
}

/// What a handler did with a [`Event::Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// Consumed: release the message now.
    Done,
    /// Keep it claimed (its slot is not recycled) until [`crate::Vchiq::release_message`].
    Hold,
    /// Not now: redeliver on the next poll after [`crate::Vchiq::kick`] (the C API's VCHIQ_RETRY).
    /// Messages behind it wait.
    Retry,
}

/// How a bulk completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMode {
    /// Deliver [`Event::Bulk`] to the service handler.
    Callback,
    /// Keep the completion for [`crate::Vchiq::take_bulk_completion`] / [`crate::Vchiq::wait_bulk`] (the C API's
    /// NOCALLBACK and BLOCKING modes).
    NoCallback,
}
