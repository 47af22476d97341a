//! Services: handles, parameters, the handler trait (both roles: an ARM client's callbacks and a
//! VideoCore-side service are the same trait), callback events, and the private per-port records
//! (service state machine, quotas, bulk queues).

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::consts::{Reason, ServiceState, VCHIQ_NUM_SERVICE_BULKS, VCHIQ_PORT_FREE};
use crate::error::VchiqError;
use crate::vchiq::Vchiq;
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
pub struct ServiceParams {
    /// Service fourcc ([`crate::consts::make_fourcc`]); 0 is invalid.
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
    /// The token to pass to [`Vchiq::release_message`] if the handler returns
    /// [`Deliver::Hold`].
    pub fn token(&self) -> MessageToken {
        self.token
    }
}

/// Names a held message for [`Vchiq::release_message`]. Opaque (slot index and offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageToken {
    pub(crate) slot: u32,
    pub(crate) offset: u32,
    pub(crate) handle: ServiceHandle,
    pub(crate) sync: bool,
}

/// A finished bulk transfer: the buffer comes back with the result.
#[derive(Debug)]
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
    /// [`Vchiq::poll`], so a handler that must not block (a VideoCore-side service with deferred
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
    /// Keep it claimed (its slot is not recycled) until [`Vchiq::release_message`].
    Hold,
    /// Not now: redeliver on the next poll after [`Vchiq::kick`] (the C API's VCHIQ_RETRY).
    /// Messages behind it wait.
    Retry,
}

/// The context of a callback.
pub struct ServiceCtx<'a> {
    /// The instance (queue messages, bulks, close from inside the callback).
    pub vchiq: &'a Vchiq,
    /// The service the event is for.
    pub handle: ServiceHandle,
}

/// A service's callbacks. Called from [`Vchiq::poll`] with no internal lock held, so it may call
/// back into the instance. For the master role this is the pluggable VideoCore-side service.
pub trait ServiceHandler: Send + Sync {
    /// One event. The return value matters only for [`Event::Message`].
    fn callback(&self, ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver;
}

impl<F> ServiceHandler for F
where
    F: Fn(&ServiceCtx<'_>, Event<'_>) -> Deliver + Send + Sync,
{
    fn callback(&self, ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver {
        self(ctx, event)
    }
}

/// How a bulk completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMode {
    /// Deliver [`Event::Bulk`] to the service handler.
    Callback,
    /// Keep the completion for [`Vchiq::take_bulk_completion`] / [`Vchiq::wait_bulk`] (the C API's
    /// NOCALLBACK and BLOCKING modes).
    NoCallback,
}

/// Per-port quota record (docs/protocols/vchiq.md §4), persistent across services reusing the port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub message_quota: u32,
    pub slot_quota: u32,
    pub message_use_count: u32,
    pub slot_use_count: u32,
    pub previous_tx_index: u32,
    /// DATA messages of this port in the slot `previous_tx_index` (our open slot while
    /// `tx_pos` is inside it): when they are all the message quota in use, only padding that
    /// slot can bring the quota back.
    pub open_slot_msgs: u32,
}

impl Quota {
    pub(crate) const fn new() -> Self {
        Quota {
            message_quota: 0,
            slot_quota: 0,
            message_use_count: 0,
            slot_use_count: 0,
            previous_tx_index: u32::MAX,
            open_slot_msgs: 0,
        }
    }
}

/// A local bulk waiting for (slave: the master's DONE; master: a remote partner).
#[derive(Debug)]
pub(crate) struct LocalBulk {
    pub tag: u64,
    pub buf: Vec<u8>,
    pub offset: usize,
    pub len: usize,
    pub mode: BulkMode,
    /// Slave: pagelist index in the region.
    pub pagelist: u32,
    /// Slave receive: fragment index used, if any.
    pub fragment: Option<u32>,
}

/// Master: a slave request {pagelist bus address, size}.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteBulk {
    pub pagelist: u32,
    pub size: i32,
}

/// One direction's bulk queue of a service.
#[derive(Debug)]
pub(crate) struct BulkQueue {
    pub local: VecDeque<LocalBulk>,
    pub remote: VecDeque<RemoteBulk>,
}

impl BulkQueue {
    fn new() -> Self {
        BulkQueue {
            local: VecDeque::with_capacity(VCHIQ_NUM_SERVICE_BULKS),
            remote: VecDeque::with_capacity(VCHIQ_NUM_SERVICE_BULKS),
        }
    }
}

/// A service record (one per port in use).
pub(crate) struct Service {
    pub handle: ServiceHandle,
    pub state: ServiceState,
    pub params: ServiceParams,
    /// Server (public fourcc) vs client.
    pub is_server: bool,
    pub remoteport: u32,
    pub client_id: i32,
    pub peer_version: i16,
    pub sync: bool,
    pub handler: Arc<dyn ServiceHandler>,
    /// remove_service was called: free the port once the close completes.
    pub remove_pending: bool,
    /// Open refused by the peer.
    pub refused: bool,
    pub tx: BulkQueue,
    pub rx: BulkQueue,
    /// NoCallback completions waiting for the owner.
    pub done: VecDeque<BulkCompletion>,
    /// A send, bulk or close was refused with `Retry` since the last [`Event::TxSpace`].
    pub tx_blocked: bool,
}

impl Service {
    pub(crate) fn new(
        handle: ServiceHandle,
        state: ServiceState,
        params: ServiceParams,
        is_server: bool,
        handler: Arc<dyn ServiceHandler>,
    ) -> Self {
        Service {
            handle,
            state,
            params,
            is_server,
            remoteport: VCHIQ_PORT_FREE,
            client_id: 0,
            peer_version: 0,
            sync: false,
            handler,
            remove_pending: false,
            refused: false,
            tx: BulkQueue::new(),
            rx: BulkQueue::new(),
            done: VecDeque::with_capacity(2 * VCHIQ_NUM_SERVICE_BULKS),
            tx_blocked: false,
        }
    }

    pub(crate) fn queue(&mut self, dir: BulkDir) -> &mut BulkQueue {
        match dir {
            BulkDir::Transmit => &mut self.tx,
            BulkDir::Receive => &mut self.rx,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, ServiceState::Open | ServiceState::OpenSync)
    }
}
