//! The datagram channel FastRPC rides on (an rpmsg endpoint per DSP domain): send one message,
//! receive whole messages.

use crate::error::Result;

/// A datagram channel to one DSP. Implementations must be callable from several threads.
///
/// # Memory-ordering contract (payload publication)
///
/// The datagram is the only synchronisation between the AP and the DSP: the payload itself is
/// written and read with Relaxed byte accesses (`crate::mem`), and the backend adds no fence of
/// its own around `send` / receipt. An implementation therefore **must** give:
///
/// - **`send` is a release** of every write the calling thread made before the call, to any
///   DSP-reachable memory (payload regions, shared buffers): when the DSP observes the datagram
///   it also observes those writes. On hardware that is what rpmsg over a virtqueue already
///   does (`virtqueue_add` + the barrier before `avail.idx` and the doorbell; a `dma_wmb` /
///   `dmb oshst` — not just an inner-shareable `dmb ish` — and cache cleaning, unless the
///   `DmaRegion` does the latter in `sync_for_device`, for memory the DSP reaches through
///   its SMMU).
/// - **Receipt is an acquire** of every write the DSP made before sending that datagram:
///   `try_recv` returning it, or the rx callback calling [`crate::Channel::handle_packet`], is
///   ordered after those writes (rpmsg: the read barrier after `used.idx`, `dma_rmb`), so a
///   thread that later learns of the completion through the context lock reads the DSP's
///   results.
///
/// The simulator's link (`sim::SimLink`) meets both with its queue mutexes (and, in callback
/// mode, by running the callback on the DSP thread after its writes). Nothing in the contract
/// protects against a DSP that keeps writing *after* it answered: that is why region memory is
/// only copied, never borrowed.
pub trait PacketChannel: Send + Sync {
    /// Send one datagram. Must not block indefinitely; `Busy` when the queue is full,
    /// `ChannelDown` when the endpoint is gone. A release of the caller's prior writes to
    /// DSP-reachable memory (see the trait docs).
    fn send(&self, msg: &[u8]) -> Result<()>;

    /// Take the next received datagram, if any, into `buf`; returns its full length (when larger
    /// than `buf`, the datagram was truncated and the receiver treats it as malformed).
    /// Channels that deliver by callback (an rpmsg rx callback calling
    /// [`crate::Channel::handle_packet`]) return `None`. Returning a datagram is an acquire of
    /// the DSP's writes made before it sent it (see the trait docs).
    fn try_recv(&self, buf: &mut [u8]) -> Option<usize>;
}
