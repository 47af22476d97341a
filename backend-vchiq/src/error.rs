//! The one error enum of the VCHIQ core, with `From` into the API-layer error.
//!
//! `VCHIQ_RETRY` (docs/protocols/vchiq.md §9 item 8) is split into typed outcomes:
//! [`VchiqError::Retry`] is back-pressure (no free slot, quota exhausted, sync slot busy, bulk
//! queue full: call again after the peer makes progress; nothing was queued), and
//! [`VchiqError::Timeout`] is a blocking call whose deadline passed. Only the blocking calls wait,
//! and they wait the one way the instance was configured with ([`crate::Config::wait`]).

use core::fmt;
use fwipc_transport_api::{Error, ProtocolError};

/// Errors of the VCHIQ core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VchiqError {
    /// Back-pressure: no slot / quota / queue entry right now. Nothing was queued; retry later.
    Retry,
    /// The service (or the connection) is closed or closing.
    Closed,
    /// The instance is shut down (Dead).
    Shutdown,
    /// Not connected yet.
    NotConnected,
    /// Bad argument: unknown handle, bad range, wrong service state, size over the limit.
    Invalid,
    /// The message is larger than `VCHIQ_MAX_MSG_SIZE`.
    TooLarge,
    /// The open was refused by the peer (no such service, version mismatch, no listener).
    Refused,
    /// The bulk was aborted (size mismatch or close).
    Aborted,
    /// Setup could not obtain memory / the region is too small or misaligned.
    NoMemory,
    /// The peer's shared state is invalid (magic, version, sizes).
    BadPeer,
    /// The peer sent something malformed.
    Protocol(ProtocolError),
    /// A deadline passed.
    Timeout,
}

impl fmt::Display for VchiqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VchiqError::Retry => f.write_str("vchiq: no slot/quota now, retry"),
            VchiqError::Closed => f.write_str("vchiq: service closed"),
            VchiqError::Shutdown => f.write_str("vchiq: instance shut down"),
            VchiqError::NotConnected => f.write_str("vchiq: not connected"),
            VchiqError::Invalid => f.write_str("vchiq: invalid argument or state"),
            VchiqError::TooLarge => f.write_str("vchiq: message too large"),
            VchiqError::Refused => f.write_str("vchiq: open refused by peer"),
            VchiqError::Aborted => f.write_str("vchiq: bulk aborted"),
            VchiqError::NoMemory => f.write_str("vchiq: no memory / region too small"),
            VchiqError::BadPeer => f.write_str("vchiq: peer shared state invalid"),
            VchiqError::Protocol(p) => write!(f, "vchiq: protocol error: {p}"),
            VchiqError::Timeout => f.write_str("vchiq: timed out"),
        }
    }
}

impl core::error::Error for VchiqError {}

impl From<ProtocolError> for VchiqError {
    fn from(p: ProtocolError) -> Self {
        VchiqError::Protocol(p)
    }
}

impl From<VchiqError> for Error {
    fn from(e: VchiqError) -> Self {
        match e {
            VchiqError::Retry => Error::Retry,
            VchiqError::Closed | VchiqError::Shutdown | VchiqError::NotConnected => Error::Shutdown,
            VchiqError::Invalid => Error::InvalidArgument,
            VchiqError::TooLarge => Error::TooLarge,
            VchiqError::Refused => Error::NotSupported,
            VchiqError::Aborted => Error::Cancelled,
            VchiqError::NoMemory => Error::NoMemory,
            VchiqError::BadPeer => Error::Protocol(ProtocolError::BadHeader),
            VchiqError::Protocol(p) => Error::Protocol(p),
            VchiqError::Timeout => Error::Timeout,
        }
    }
}

/// Result alias of the core.
pub type Result<T = ()> = core::result::Result<T, VchiqError>;
