//! What SCMI keeps of its own per cmdq message, beside the shared per-transfer state machine
//! ([`fwipc_transport_api::TransferTable`], which holds the generation, the state, the token and
//! its quarantine, the waker, the pool buffer and whether the device holds it): the Linux poll
//! state (docs/protocols/scmi.md §2.5), the header word the reply must echo, and the addresses
//! `Hal::share` returned for the two areas of the buffer while the device holds them.
//!
//! Message `i` is table entry (and pool buffer) `i`, and always uses descriptors `2i` (request,
//! device-readable) and `2i + 1` (response, device-writable): the used-ring head `2i` names it,
//! so the drain reports replies by entry ([`fwipc_transport_api::TransferTable::on_reply_at`]).
//! The device's hold on a buffer is the table's loan: a timed-out message stays device-owned,
//! its buffer and token quarantined, until the device returns the chain or is reset.

use virtio_drivers::PhysAddr;

/// Linux `poll_status` values (transports/virtio.c), kept with their numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum PollStatus {
    /// Interrupt-completed message.
    #[default]
    NotPolled = 0,
    /// A polled message whose caller gave up while the device still owned it.
    PollTimeout = 1,
    /// A polled message in flight.
    Polling = 2,
    /// A polled message the device returned (seen by whoever dequeued it).
    PollDone = 3,
}

/// SCMI's part of one cmdq message (the table's backend part).
#[derive(Debug, Default)]
pub(crate) struct ScmiPart {
    pub(crate) poll: PollStatus,
    /// The header word we sent; the reply must echo it exactly (token + protocol + message +
    /// type, docs/protocols/scmi.md §8 item 4).
    pub(crate) hdr: u32,
    /// Addresses `Hal::share` returned for the request and response areas while posted.
    pub(crate) shared: [PhysAddr; 2],
    /// Bytes of the request area the device reads (header + payload).
    pub(crate) req_len: usize,
}

impl ScmiPart {
    /// The device returned the message (or was reset): a polled one is now seen done.
    pub(crate) fn returned(&mut self) {
        if self.poll == PollStatus::Polling {
            self.poll = PollStatus::PollDone;
        }
    }
}
