//! Per-message state of the cmdq: who owns the buffer, how its completion is detected (the Linux
//! poll states, docs/protocols/scmi.md §2.5), and what came back.
//!
//! Reference counting: each message is one [`PoolBuf`] of the channel's `MsgPool`. Its users are
//! exactly Linux's `users` count generalised to a split-phase API: the *device's* reference is a
//! pool loan (`PoolBuf::lend` at send, `MsgPool::reclaim` when the device returns the chain or is
//! reset) and the *caller's* reference is the `PoolBuf` kept in [`Slot::local`] until
//! `mark_txdone`. (Linux can drop the caller's reference of a NOT_POLLED message at rx time
//! because its core copies the reply synchronously; our `fetch_response` comes later, so the
//! caller's reference lives until `mark_txdone`.) A buffer is recycled only when both are gone,
//! so a timed-out message stays device-owned and its token quarantined until the device returns
//! it.

use fwipc_transport_api::{Error, PoolBuf, Token};
use virtio_drivers::PhysAddr;

/// Linux `poll_status` values (transports/virtio.c), kept with their numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PollStatus {
    /// Interrupt-completed message.
    NotPolled = 0,
    /// A polled message whose caller gave up while the device still owned it.
    PollTimeout = 1,
    /// A polled message in flight.
    Polling = 2,
    /// A polled message the device returned (seen by whoever dequeued it).
    PollDone = 3,
}

/// Who holds the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// On the pool's free list (or held only by the caller after completion/reset).
    Driver,
    /// Posted on the cmdq; the device may access it.
    Device,
    /// Posted, and the caller gave up (timeout/cancel): the buffer and token wait for the device
    /// to return the chain (late reply, dropped and counted) or for a device reset.
    Abandoned,
}

/// Outcome of a transfer as recorded by the completion path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No reply yet.
    Pending,
    /// The device returned the chain with a well-formed reply of `len` bytes (header + status +
    /// return values) in the response area.
    Reply {
        /// Validated used length (8 ≤ len ≤ response area).
        len: usize,
    },
    /// The transfer ended without a usable reply (malformed reply, shutdown).
    Failed(Error),
}

/// One cmdq message slot; slot `i` always uses descriptors `2i` (request, device-readable) and
/// `2i + 1` (response, device-writable), so the head id `2i` names the slot.
pub struct Slot {
    pub(crate) owner: Owner,
    pub(crate) poll: PollStatus,
    /// Bumped at every send; tickets carry it to detect stale use.
    pub(crate) generation: u32,
    pub(crate) token: Token,
    /// The header word we sent; the reply must echo it exactly (token + protocol + message +
    /// type, docs/protocols/scmi.md §8 item 4).
    pub(crate) hdr: u32,
    pub(crate) outcome: Outcome,
    /// The caller's reference (see the module docs).
    pub(crate) local: Option<PoolBuf>,
    pub(crate) waker: Option<core::task::Waker>,
    /// Addresses `Hal::share` returned for the request and response areas while posted.
    pub(crate) shared: [PhysAddr; 2],
    pub(crate) req_len: usize,
}

impl Slot {
    pub(crate) fn new() -> Self {
        Slot {
            owner: Owner::Driver,
            poll: PollStatus::NotPolled,
            generation: 0,
            token: Token(0),
            hdr: 0,
            outcome: Outcome::Pending,
            local: None,
            waker: None,
            shared: [0; 2],
            req_len: 0,
        }
    }

    /// Whether the device holds the buffer (posted, possibly abandoned).
    pub(crate) fn device_owned(&self) -> bool {
        matches!(self.owner, Owner::Device | Owner::Abandoned)
    }
}
