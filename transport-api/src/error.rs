//! The one error enum of the API layer, with `Display` and an errno mapping for C callers.

use core::fmt;

/// What was wrong with data the remote side sent. Every parser of remote input returns one of these
/// (and counts it) instead of panicking or reading out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A header field had a value the protocol does not allow (reserved bits, unknown type, bad magic).
    BadHeader,
    /// A length field was out of range: larger than the buffer, smaller than the fixed part.
    BadLength,
    /// A reply carried a token/id that matches nothing in flight.
    UnknownToken,
    /// A reply for a transfer that was already completed.
    Duplicate,
    /// A message of a type that is not valid in the receiver's current state.
    UnexpectedMessage,
    /// The remote broke the protocol's state machine (e.g. returned a buffer it did not hold).
    BadState,
    /// A count or index reported by the remote exceeded what it advertised.
    OutOfRange,
    /// The message was cut short.
    Truncated,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolError::BadHeader => "bad header",
            ProtocolError::BadLength => "bad length",
            ProtocolError::UnknownToken => "unknown token",
            ProtocolError::Duplicate => "duplicate reply",
            ProtocolError::UnexpectedMessage => "unexpected message",
            ProtocolError::BadState => "remote violated the protocol state machine",
            ProtocolError::OutOfRange => "count or index out of range",
            ProtocolError::Truncated => "truncated message",
        })
    }
}

/// The error of every fallible operation in the API layer. Backends keep their own, richer enums
/// and convert into this one with `From`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// No free buffer, token or slot right now; nothing was queued. Retry after a completion.
    Busy,
    /// The deadline passed before the remote answered.
    Timeout,
    /// The channel is shutting down or was shut down; the operation was not (or no longer) performed.
    Shutdown,
    /// A caller-supplied argument is invalid (unknown handle, bad range, wrong state).
    InvalidArgument,
    /// The message or buffer is larger than the transport can carry.
    TooLarge,
    /// The transport or remote does not implement this operation.
    NotSupported,
    /// Memory for setup could not be obtained. Never returned from steady-state paths.
    NoMemory,
    /// The caller cancelled the operation, or the remote aborted it.
    Cancelled,
    /// Back-pressure: the remote's quota is exhausted; retry after the remote makes progress.
    /// Returned instead of sleeping (the Linux VCHIQ_RETRY case).
    Retry,
    /// The remote sent something malformed.
    Protocol(ProtocolError),
    /// The remote answered with a non-success status. The raw code is kept; its meaning is the
    /// backend protocol's (e.g. SCMI status codes).
    Remote(i32),
}

/// Shorthand result type of this crate.
pub type Result<T = ()> = core::result::Result<T, Error>;

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Busy => f.write_str("no free buffer or token (busy)"),
            Error::Timeout => f.write_str("timed out waiting for the remote"),
            Error::Shutdown => f.write_str("channel shut down"),
            Error::InvalidArgument => f.write_str("invalid argument"),
            Error::TooLarge => f.write_str("message too large for the transport"),
            Error::NotSupported => f.write_str("operation not supported"),
            Error::NoMemory => f.write_str("out of memory at setup"),
            Error::Cancelled => f.write_str("operation cancelled"),
            Error::Retry => f.write_str("remote quota exhausted, retry later"),
            Error::Protocol(p) => write!(f, "protocol error from remote: {p}"),
            Error::Remote(code) => write!(f, "remote returned status {code}"),
        }
    }
}

impl core::error::Error for Error {}

impl core::error::Error for ProtocolError {}

/// Linux errno values used by [`Error::errno`]; stable so C callers can match on them.
pub mod errno {
    #![allow(missing_docs)]
    pub const E2BIG: i32 = 7;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EINVAL: i32 = 22;
    pub const EPROTO: i32 = 71;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ESHUTDOWN: i32 = 108;
    pub const ETIMEDOUT: i32 = 110;
    pub const EREMOTEIO: i32 = 121;
    pub const ECANCELED: i32 = 125;
}

impl Error {
    /// The positive errno a C caller sees (negate it for kernel-style returns).
    pub const fn errno(self) -> i32 {
        match self {
            Error::Busy => errno::EBUSY,
            Error::Timeout => errno::ETIMEDOUT,
            Error::Shutdown => errno::ESHUTDOWN,
            Error::InvalidArgument => errno::EINVAL,
            Error::TooLarge => errno::E2BIG,
            Error::NotSupported => errno::EOPNOTSUPP,
            Error::NoMemory => errno::ENOMEM,
            Error::Cancelled => errno::ECANCELED,
            Error::Retry => errno::EAGAIN,
            Error::Protocol(_) => errno::EPROTO,
            Error::Remote(_) => errno::EREMOTEIO,
        }
    }

    /// `0` for `Ok`, `-errno` for `Err`: the kernel convention, for FFI shims.
    pub fn to_c_return<T>(r: &Result<T>) -> i32 {
        match r {
            Ok(_) => 0,
            Err(e) => -e.errno(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_is_distinct_per_variant() {
        let all = [
            Error::Busy,
            Error::Timeout,
            Error::Shutdown,
            Error::InvalidArgument,
            Error::TooLarge,
            Error::NotSupported,
            Error::NoMemory,
            Error::Cancelled,
            Error::Retry,
            Error::Protocol(ProtocolError::BadLength),
            Error::Remote(-1),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.errno(), b.errno(), "{a:?} and {b:?} share an errno");
            }
        }
        assert_eq!(Error::to_c_return::<()>(&Err(Error::Timeout)), -110);
        assert_eq!(Error::to_c_return(&Ok(5)), 0);
    }

    #[test]
    fn display_mentions_detail() {
        let s = std::format!("{}", Error::Remote(-7));
        assert!(s.contains("-7"));
        let s = std::format!("{}", Error::Protocol(ProtocolError::UnknownToken));
        assert!(s.contains("unknown token"));
    }
}
