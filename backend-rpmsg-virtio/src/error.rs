//! The crate's two error layers: [`WireError`] for remote bytes that break the wire format, and
//! [`RpmsgError`] for the endpoint layer.

use core::fmt;

use fwipc_transport_api::{Error, ProtocolError};

/// What was wrong with bytes the remote sent (or with a frame we were asked to build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the fixed part (16-byte header, 40-byte name-service message).
    Truncated,
    /// The header's `len` exceeds the bytes the buffer holds, the buffer exceeds its size, or a
    /// name-service payload is longer than 40 bytes.
    BadLength,
    /// A name that is empty, or has no NUL terminator within its 32 bytes.
    BadName,
    /// Name-service flags other than create (0) or destroy (1).
    BadNsFlags,
    /// A name-service message for an address no service can have:
    /// [`ADDR_ANY`](crate::addr::ADDR_ANY) or the name service's own.
    BadNsAddr,
    /// Building a frame: the payload does not fit in one buffer.
    TooLarge,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "rpmsg: message shorter than its fixed part",
            WireError::BadLength => "rpmsg: length out of range",
            WireError::BadName => "rpmsg: service name empty or not NUL-terminated",
            WireError::BadNsFlags => "rpmsg: unknown name-service flags",
            WireError::BadNsAddr => "rpmsg: name-service message for an impossible address",
            WireError::TooLarge => "rpmsg: payload larger than one buffer",
        })
    }
}

impl core::error::Error for WireError {}

impl From<WireError> for ProtocolError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => ProtocolError::Truncated,
            WireError::BadLength | WireError::TooLarge => ProtocolError::BadLength,
            WireError::BadName | WireError::BadNsFlags | WireError::BadNsAddr => {
                ProtocolError::BadHeader
            }
        }
    }
}

/// Errors of the endpoint layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpmsgError {
    /// The address is already bound to an endpoint.
    AddressInUse,
    /// No free address is left in the dynamic range.
    NoFreeAddress,
    /// The endpoint (or remote-service) table is full.
    TableFull,
    /// [`ADDR_ANY`](crate::addr::ADDR_ANY) as an explicit address, or an address in the
    /// per-transfer range.
    BadAddress,
    /// No endpoint is bound at the address.
    NotBound,
    /// The peer's message broke the wire format.
    Wire(WireError),
}

impl fmt::Display for RpmsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpmsgError::AddressInUse => f.write_str("rpmsg: address in use"),
            RpmsgError::NoFreeAddress => f.write_str("rpmsg: no free endpoint address"),
            RpmsgError::TableFull => f.write_str("rpmsg: table full"),
            RpmsgError::BadAddress => f.write_str("rpmsg: address cannot be bound"),
            RpmsgError::NotBound => f.write_str("rpmsg: no endpoint at that address"),
            RpmsgError::Wire(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for RpmsgError {}

impl From<WireError> for RpmsgError {
    fn from(e: WireError) -> Self {
        RpmsgError::Wire(e)
    }
}

impl From<RpmsgError> for Error {
    fn from(e: RpmsgError) -> Self {
        match e {
            RpmsgError::AddressInUse | RpmsgError::BadAddress | RpmsgError::NotBound => {
                Error::InvalidArgument
            }
            RpmsgError::NoFreeAddress | RpmsgError::TableFull => Error::Busy,
            RpmsgError::Wire(w) => Error::Protocol(w.into()),
        }
    }
}
