//! [`VchiError`]: the one error enum of the VCHI client layer.

use core::fmt;

use fwipc_transport_api::{Error, ProtocolError};

/// Why the VideoCore refused an `'SMEM'` request. Carried in the `success` word of a
/// `vc_sm_result_t` reply (0 = success). The firmware's own codes are not public (unverified); our
/// simulated VideoCore uses these negative errno-style values, and an unknown value is kept raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SmemStatus {
    /// The handle was never issued by this VideoCore.
    UnknownHandle,
    /// The handle was issued but its block is already freed (double free / use after free).
    StaleHandle,
    /// The VideoCore memory area has no free range of that size and alignment.
    NoSpace,
    /// A request field was out of range (zero size, bad alignment, address overflow).
    InvalidArgument,
    /// The block is locked and cannot be freed.
    Locked,
    /// Unlock of a block that is not locked.
    NotLocked,
    /// The message type is not implemented by this VideoCore.
    NotSupported,
    /// The VideoCore answered with a null handle or address and no reason (how the real firmware
    /// reports most failures; unverified).
    Refused,
    /// A status code this client does not know.
    Other(i32),
}

impl SmemStatus {
    /// The wire value of this status (negative; 0 is success and has no variant).
    pub const fn code(self) -> i32 {
        match self {
            SmemStatus::UnknownHandle => -2,
            SmemStatus::StaleHandle => -3,
            SmemStatus::NoSpace => -12,
            SmemStatus::InvalidArgument => -22,
            SmemStatus::Locked => -16,
            SmemStatus::NotLocked => -1,
            SmemStatus::NotSupported => -95,
            SmemStatus::Refused => -5,
            SmemStatus::Other(c) => c,
        }
    }

    /// The status for a non-zero wire value.
    pub const fn from_code(c: i32) -> Self {
        match c {
            -2 => SmemStatus::UnknownHandle,
            -3 => SmemStatus::StaleHandle,
            -12 => SmemStatus::NoSpace,
            -22 => SmemStatus::InvalidArgument,
            -16 => SmemStatus::Locked,
            -1 => SmemStatus::NotLocked,
            -95 => SmemStatus::NotSupported,
            -5 => SmemStatus::Refused,
            c => SmemStatus::Other(c),
        }
    }
}

impl fmt::Display for SmemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            SmemStatus::UnknownHandle => "unknown handle",
            SmemStatus::StaleHandle => "stale handle",
            SmemStatus::NoSpace => "no space",
            SmemStatus::InvalidArgument => "invalid argument",
            SmemStatus::Locked => "block locked",
            SmemStatus::NotLocked => "block not locked",
            SmemStatus::NotSupported => "not supported",
            SmemStatus::Refused => "refused",
            SmemStatus::Other(c) => return write!(f, "smem: VideoCore status {c}"),
        };
        write!(f, "smem: {what} ({})", self.code())
    }
}

impl core::error::Error for SmemStatus {}

/// The error of every fallible VCHI client operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VchiError {
    /// The VCHIQ core failed (refused open, closed service, back-pressure that the pump gave
    /// up on...).
    Core(crate::error::VchiqError),
    /// A transport-level failure (the pump's timeout, or the in-process loopback).
    Transport(Error),
    /// The remote sent something malformed: too short, wrong type, bad field.
    Protocol(ProtocolError),
    /// A reply carried a transaction id that matches no request in flight.
    UnexpectedTransaction {
        /// The id we were waiting for.
        expected: u32,
        /// The id the remote sent.
        got: u32,
    },
    /// The VideoCore's `'SMEM'` service refused the request.
    Smem(SmemStatus),
    /// A `vchiq_test` routine found data that differs from what it sent or expected.
    Verify {
        /// Iteration (or sub-test) where the mismatch was found.
        iteration: u32,
        /// Byte offset of the first mismatch (or `u32::MAX` for a length mismatch).
        offset: u32,
    },
    /// A bulk receive wrote outside its window (offset of the first damaged guard byte relative to
    /// the window start; negative = before it): the cache-line-edge corruption of
    /// docs/protocols/vchiq.md §5.
    DmaOverrun {
        /// Offset of the damaged byte.
        offset: isize,
    },
    /// The remote's echo server reported an error string instead of a reply.
    RemoteError,
    /// A caller argument is out of range (size 0, name too long, buffer too small).
    InvalidArgument,
    /// The message does not fit in one VCHIQ message (4088 bytes).
    TooLarge,
    /// The local table of this client is full (imports, pending events).
    TableFull,
}

impl VchiError {
    /// Shorthand for a malformed-input error.
    pub const fn proto(p: ProtocolError) -> Self {
        VchiError::Protocol(p)
    }
}

impl From<Error> for VchiError {
    fn from(e: Error) -> Self {
        VchiError::Transport(e)
    }
}

impl From<ProtocolError> for VchiError {
    fn from(p: ProtocolError) -> Self {
        VchiError::Protocol(p)
    }
}

impl From<VchiError> for Error {
    fn from(e: VchiError) -> Self {
        match e {
            VchiError::Core(e) => e.into(),
            VchiError::Transport(e) => e,
            VchiError::Protocol(p) => Error::Protocol(p),
            VchiError::UnexpectedTransaction { .. } => Error::Protocol(ProtocolError::UnknownToken),
            VchiError::Smem(SmemStatus::UnknownHandle | SmemStatus::StaleHandle) => {
                Error::InvalidArgument
            }
            VchiError::Smem(SmemStatus::NotSupported) => Error::NotSupported,
            VchiError::Smem(s) => Error::Remote(s.code()),
            VchiError::Verify { .. } => Error::Protocol(ProtocolError::BadState),
            VchiError::DmaOverrun { .. } => Error::Protocol(ProtocolError::BadState),
            VchiError::RemoteError => Error::Remote(-1),
            VchiError::InvalidArgument => Error::InvalidArgument,
            VchiError::TooLarge => Error::TooLarge,
            VchiError::TableFull => Error::Busy,
        }
    }
}

impl fmt::Display for VchiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VchiError::Core(e) => write!(f, "vchiq: {e}"),
            VchiError::Transport(e) => write!(f, "transport: {e}"),
            VchiError::Protocol(p) => write!(f, "malformed reply: {p}"),
            VchiError::UnexpectedTransaction { expected, got } => {
                write!(f, "reply for transaction {got:#x}, expected {expected:#x}")
            }
            VchiError::Smem(s) => write!(f, "SMEM refused: {s:?} ({})", s.code()),
            VchiError::Verify { iteration, offset } => {
                write!(f, "data mismatch in iteration {iteration} at byte {offset}")
            }
            VchiError::DmaOverrun { offset } => {
                write!(f, "bulk receive wrote outside its window (byte {offset})")
            }
            VchiError::RemoteError => f.write_str("remote test server reported an error"),
            VchiError::InvalidArgument => f.write_str("invalid argument"),
            VchiError::TooLarge => f.write_str("message larger than a VCHIQ slot"),
            VchiError::TableFull => f.write_str("client table full"),
        }
    }
}

impl core::error::Error for VchiError {}

#[cfg(test)]
mod tests {
    #[test]
    fn smem_status_is_an_error_with_its_code() {
        let e: &dyn core::error::Error = &SmemStatus::NoSpace;
        assert_eq!(alloc::format!("{e}"), "smem: no space (-12)");
        assert_eq!(
            alloc::format!("{}", SmemStatus::from_code(-7)),
            "smem: VideoCore status -7"
        );
    }

    use super::*;

    #[test]
    fn status_codes_round_trip_and_are_distinct() {
        let all = [
            SmemStatus::UnknownHandle,
            SmemStatus::StaleHandle,
            SmemStatus::NoSpace,
            SmemStatus::InvalidArgument,
            SmemStatus::Locked,
            SmemStatus::NotLocked,
            SmemStatus::NotSupported,
            SmemStatus::Refused,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_ne!(a.code(), 0);
            assert_eq!(SmemStatus::from_code(a.code()), *a);
            for b in &all[i + 1..] {
                assert_ne!(a.code(), b.code());
            }
        }
        assert_eq!(SmemStatus::from_code(-77), SmemStatus::Other(-77));
    }

    #[test]
    fn converts_into_transport_error() {
        assert_eq!(
            Error::from(VchiError::Smem(SmemStatus::StaleHandle)),
            Error::InvalidArgument
        );
        assert_eq!(
            Error::from(VchiError::Smem(SmemStatus::NoSpace)),
            Error::Remote(-12)
        );
        assert_eq!(
            Error::from(VchiError::Protocol(ProtocolError::Truncated)),
            Error::Protocol(ProtocolError::Truncated)
        );
        assert_eq!(
            Error::from(VchiError::Transport(Error::Timeout)),
            Error::Timeout
        );
        assert_eq!(Error::from(VchiError::TableFull), Error::Busy);
    }
}
