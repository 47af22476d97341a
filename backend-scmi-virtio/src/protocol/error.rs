//! The one error enum of the SCMI protocol layer, and how it converts to the API error.

use core::fmt;

use fwipc_transport_api::{Error, ProtocolError};

use crate::status::ScmiStatus;

/// What was wrong with a reply, delayed response or notification the platform sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// Shorter than its fixed part, or than the entries it announces.
    Truncated,
    /// A fixed-size message had a length other than the specified one.
    BadLength,
    /// A name field had no NUL terminator within its 16/64 bytes.
    BadName,
    /// A count or id exceeded what the platform advertised (index + returned > total, id ≥ count).
    OutOfRange,
    /// A multi-part reply returned no entries but claimed more remain, or claimed more remain
    /// once everything advertised had arrived.
    NoProgress,
    /// A multi-part enumeration needed more rounds than the configured cap.
    TooManyRounds,
    /// A delayed response or reading named a different object than the one requested.
    IdMismatch,
    /// A P2A header was invalid (reserved bits, unknown type).
    BadHeader,
    /// A multi-part listing disagreed with its total (docs/protocols/scmi.md §5): it ended
    /// (nothing returned and nothing remaining, or nothing remaining) before the announced number
    /// of entries had arrived, or a page's index + returned + remaining was not the total.
    CountMismatch,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Truncated => "reply truncated",
            Malformed::BadLength => "reply length differs from the specified size",
            Malformed::BadName => "name not NUL-terminated",
            Malformed::OutOfRange => "count or id beyond what the platform advertised",
            Malformed::NoProgress => "multi-part reply makes no progress",
            Malformed::TooManyRounds => "multi-part enumeration exceeded its round cap",
            Malformed::IdMismatch => "reply names a different object",
            Malformed::BadHeader => "bad SCMI header",
            Malformed::CountMismatch => "multi-part listing disagrees with its announced total",
        })
    }
}

impl From<Malformed> for ProtocolError {
    fn from(m: Malformed) -> Self {
        match m {
            Malformed::Truncated => ProtocolError::Truncated,
            Malformed::BadLength | Malformed::BadName => ProtocolError::BadLength,
            Malformed::OutOfRange
            | Malformed::NoProgress
            | Malformed::TooManyRounds
            | Malformed::CountMismatch => ProtocolError::OutOfRange,
            Malformed::IdMismatch => ProtocolError::UnexpectedMessage,
            Malformed::BadHeader => ProtocolError::BadHeader,
        }
    }
}

/// Error of every operation of the SCMI protocol layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScmiError {
    /// The platform answered with a non-SUCCESS status (raw code kept in the status).
    Status(ScmiStatus),
    /// The platform's reply was malformed.
    Malformed(Malformed),
    /// The transport failed (timeout, busy, shutdown, ...).
    Transport(Error),
    /// A caller-supplied argument cannot be encoded or is out of range.
    InvalidArgument,
    /// The caller's output buffer (or a layer-internal bound) is too small for the reply.
    BufferTooSmall,
}

/// Result of the protocol layer.
pub type Result<T = ()> = core::result::Result<T, ScmiError>;

impl ScmiError {
    /// The SCMI status, if the platform answered with one.
    pub const fn status(&self) -> Option<ScmiStatus> {
        match self {
            ScmiError::Status(s) => Some(*s),
            _ => None,
        }
    }
}

impl fmt::Display for ScmiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScmiError::Status(s) => write!(f, "platform returned {s}"),
            ScmiError::Malformed(m) => write!(f, "malformed SCMI message: {m}"),
            ScmiError::Transport(e) => write!(f, "transport: {e}"),
            ScmiError::InvalidArgument => f.write_str("invalid argument"),
            ScmiError::BufferTooSmall => f.write_str("buffer too small for the reply"),
        }
    }
}

impl core::error::Error for ScmiError {}

impl core::error::Error for Malformed {}

impl From<Malformed> for ScmiError {
    fn from(m: Malformed) -> Self {
        ScmiError::Malformed(m)
    }
}

impl From<ScmiStatus> for ScmiError {
    fn from(s: ScmiStatus) -> Self {
        ScmiError::Status(s)
    }
}

/// `Error::Remote(code)` becomes a typed status; everything else stays a transport error.
impl From<Error> for ScmiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Remote(code) => ScmiError::Status(ScmiStatus::from_raw(code)),
            Error::TooLarge => ScmiError::BufferTooSmall,
            e => ScmiError::Transport(e),
        }
    }
}

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Self {
        Error::Protocol(m.into())
    }
}

impl From<ScmiError> for Error {
    fn from(e: ScmiError) -> Self {
        match e {
            ScmiError::Status(s) => Error::Remote(s.raw()),
            ScmiError::Malformed(m) => Error::Protocol(m.into()),
            ScmiError::Transport(e) => e,
            ScmiError::InvalidArgument => Error::InvalidArgument,
            ScmiError::BufferTooSmall => Error::TooLarge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_the_raw_status() {
        let e = ScmiError::from(Error::Remote(-11));
        assert_eq!(e, ScmiError::Status(ScmiStatus::InUse));
        assert_eq!(Error::from(e), Error::Remote(-11));
        assert_eq!(
            Error::from(ScmiError::Malformed(Malformed::Truncated)),
            Error::Protocol(ProtocolError::Truncated)
        );
        assert_eq!(
            ScmiError::from(Error::Timeout),
            ScmiError::Transport(Error::Timeout)
        );
        assert_eq!(Error::from(ScmiError::from(Error::Timeout)), Error::Timeout);
    }
}
