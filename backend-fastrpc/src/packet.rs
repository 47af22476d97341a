//! The datagram channel FastRPC rides on (an rpmsg endpoint per DSP domain): send one message,
//! receive whole messages.

use crate::error::Result;

/// A datagram channel to one DSP. Implementations must be callable from several threads.
pub trait PacketChannel: Send + Sync {
    /// Send one datagram. Must not block indefinitely; `Busy` when the queue is full,
    /// `ChannelDown` when the endpoint is gone.
    fn send(&self, msg: &[u8]) -> Result<()>;

    /// Take the next received datagram, if any, into `buf`; returns its full length (when larger
    /// than `buf`, the datagram was truncated and the receiver treats it as malformed).
    /// Channels that deliver by callback (an rpmsg rx callback calling
    /// [`crate::Channel::handle_packet`]) return `None`.
    fn try_recv(&self, buf: &mut [u8]) -> Option<usize>;
}
