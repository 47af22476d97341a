//! What the rpmsg core needs from the buffer plumbing under it: a way to hand a frame to the
//! peer and a way to take the frames the peer sent. A virtio embedder implements it over the two
//! virtqueues (the driver owns every buffer: it posts receive buffers on vq 0 and transmit
//! buffers on vq 1); the simulator implements it over in-memory queues.

use core::fmt;

use fwipc_transport_api::TxLoan;

use crate::addr::{BUF_SIZE, HDR_SIZE};

/// Why a frame could not be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// No free transmit buffer right now (the peer has not returned any).
    NoBuffer,
    /// The link is down (device reset or shut down).
    Down,
    /// The link does not loan its transmit buffers, or the loan is not one of its own.
    Unsupported,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkError::NoBuffer => "rpmsg link: no free transmit buffer",
            LinkError::Down => "rpmsg link: down",
            LinkError::Unsupported => "rpmsg link: no such transmit loan",
        })
    }
}

impl core::error::Error for LinkError {}

/// The buffer plumbing under an rpmsg node.
pub trait Link: Send + Sync {
    /// Copy `frame` (header + payload, at most [`BUF_SIZE`] bytes) into a free transmit buffer
    /// and hand it to the peer (publish, then notify). Never blocks.
    fn send(&self, frame: &[u8]) -> Result<(), LinkError>;

    /// [`Link::send`] of the frame `hdr` + `payload`, without the caller assembling it first.
    /// The default assembles it in a buffer of its own; a link that copies every frame into a
    /// transmit buffer anyway copies the two parts there directly. A payload longer than
    /// [`MAX_PAYLOAD`](crate::addr::MAX_PAYLOAD) is refused (`NoBuffer`), as `send` refuses a
    /// frame longer than a buffer.
    fn send_parts(&self, hdr: &[u8; HDR_SIZE], payload: &[u8]) -> Result<(), LinkError> {
        let mut frame = [0u8; BUF_SIZE];
        let n = HDR_SIZE + payload.len();
        frame[..HDR_SIZE].copy_from_slice(hdr);
        frame
            .get_mut(HDR_SIZE..n)
            .ok_or(LinkError::NoBuffer)?
            .copy_from_slice(payload);
        self.send(&frame[..n])
    }

    /// Take up to `budget` received frames, each copied into private memory and passed to
    /// `sink` (never a view of memory the peer can still write), and give their buffers back to
    /// the peer. Returns how many were taken. The used length the peer reported is clamped to
    /// the buffer size before `sink` sees it.
    fn receive(&self, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize;

    /// Take back every buffer the peer holds (device reset); frames not yet received are lost.
    fn reset(&self);

    /// Misbehaviour of the peer's that the link dropped or repaired below the frames (a used
    /// element naming no buffer, a buffer returned twice, an index jump), counted into the
    /// transport's `Stats::protocol_errors`. The default: none.
    fn faults(&self) -> u64 {
        0
    }

    /// Frames and loans refused because the peer held every transmit buffer, reported in the
    /// transport's `DatagramStats::tx_exhausted`. The default: not counted (0).
    fn tx_exhausted(&self) -> u64 {
        0
    }

    /// Receive passes that stopped at their budget with frames still waiting, reported in the
    /// transport's `DatagramStats::rx_budget_hits`. The default: not counted (0).
    fn budget_hits(&self) -> u64 {
        0
    }

    /// Whether the link reset its device since the last call (the device reported it needed a
    /// reset), and set it up again or, the reset failing, gave it up: every frame in flight
    /// then, either way, is lost, so the transport ends the transfers waiting for one. The
    /// default: never.
    fn take_device_reset(&self) -> bool {
        false
    }

    /// Ask the peer for no receive interrupt for now: a caller spins on the transport and takes
    /// the frames itself ([`Transport::spinning`]). A hint; the default ignores it.
    ///
    /// [`Transport::spinning`]: fwipc_transport_api::Transport::spinning
    fn pause_interrupts(&self) {}

    /// End [`Link::pause_interrupts`]: ask for the interrupt again, then look: `true` when
    /// frames are waiting, which may have arrived while no interrupt was asked for (the caller
    /// receives them). The default never paused: `false`.
    fn resume_interrupts(&self) -> bool {
        false
    }

    /// Loan a free transmit buffer, to write a payload in place (a zero-copy send): the loan
    /// covers the payload area behind the 16-byte header. `NoBuffer` when none is free (or the
    /// link's loans are all out), `Unsupported` for a link that does not loan.
    fn loan(&self) -> Result<TxLoan, LinkError> {
        Err(LinkError::Unsupported)
    }

    /// Write `hdr` in front of the loaned payload and hand the buffer to the peer (publish, then
    /// notify). A loan that is not this link's (`Unsupported`), or a link that is down, hands
    /// the loan back.
    fn send_loan(&self, hdr: &[u8; HDR_SIZE], loan: TxLoan) -> Result<(), (LinkError, TxLoan)> {
        let _ = hdr;
        Err((LinkError::Unsupported, loan))
    }
}
