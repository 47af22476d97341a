//! The FastRPC layer's error enum, the DSP's AEE status codes, and the conversion into the
//! transport API's [`fwipc_transport_api::Error`].

use core::fmt;

use fwipc_transport_api::{Error, ProtocolError};

/// `DSP_AEE_EOFFSET`: every AEE code the DSP returns is `0x80000400 + n` (`AEEStdErr.h`).
pub const DSP_AEE_EOFFSET: u32 = 0x8000_0400;

/// The AEE error numbers we use (`AEEStdErr.h`, offsets from [`DSP_AEE_EOFFSET`]).
pub mod aee {
    /// Generic failure.
    pub const EFAILED: u32 = 0x01;
    /// Out of memory.
    pub const ENOMEMORY: u32 = 0x02;
    /// Wrong state for the operation.
    pub const EBADSTATE: u32 = 0x0D;
    /// Bad parameter (also: argument count mismatch in a skel).
    pub const EBADPARM: u32 = 0x0E;
    /// Bad item.
    pub const EBADITEM: u32 = 0x10;
    /// Unknown method.
    pub const EUNSUPPORTED: u32 = 0x14;
    /// Privilege level.
    pub const EPRIVLEVEL: u32 = 0x15;
    /// Buffer too small.
    pub const EBUFFERTOOSMALL: u32 = 0x26;
    /// Invalid handle.
    pub const EINVHANDLE: u32 = 0x2C;
    /// No such module.
    pub const ENOSUCHMOD: u32 = 0x3E;
    /// No such map.
    pub const ENOSUCHMAP: u32 = 0x48;
    /// Connection refused.
    pub const ECONNREFUSED: u32 = 0x72;

    /// The `retval` a DSP sends for error number `n` (`0x80000400 + n` as a signed 32-bit value).
    pub const fn dsp(n: u32) -> i32 {
        (super::DSP_AEE_EOFFSET + n) as i32
    }
}

/// A DSP status: the raw signed `retval` of a response that was not `AEE_SUCCESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AeeError(pub i32);

impl AeeError {
    /// The AEE number `n` if the value is in the DSP's `0x80000400 + n` range.
    pub fn number(self) -> Option<u32> {
        let v = self.0 as u32;
        v.checked_sub(DSP_AEE_EOFFSET).filter(|n| *n < 0x400)
    }
}

/// Errors of the FastRPC layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FastRpcError {
    /// No free context, payload buffer or session (`EBUSY`).
    Busy,
    /// The call's payload or a buffer does not fit the buffers sized at setup.
    TooLarge,
    /// A caller-supplied argument is invalid (`EINVAL`): counts over the scalars limits, argument
    /// kinds out of order, a copied buffer overlapping an fd-backed one...
    InvalidArgument,
    /// A user invoke on the process-control handle 1 (`EPERM`).
    PermissionDenied,
    /// Domain id out of range, or a capability query on mdsp (`ECHRNG`).
    BadDomain,
    /// The channel is shut down or the DSP went away (`EPIPE`).
    ChannelDown,
    /// The DSP restarted with the call in flight (`EPIPE` in Linux since 2023).
    RemoteReset,
    /// The deadline passed before the DSP answered.
    Timeout,
    /// Not implemented by this side or the DSP.
    NotSupported,
    /// Memory could not be obtained at setup (never on steady-state paths).
    NoMemory,
    /// The DSP sent something malformed.
    Protocol(ProtocolError),
    /// The DSP answered with a non-success `retval`.
    Aee(AeeError),
}

impl From<ProtocolError> for FastRpcError {
    fn from(e: ProtocolError) -> Self {
        FastRpcError::Protocol(e)
    }
}

impl From<FastRpcError> for Error {
    fn from(e: FastRpcError) -> Self {
        match e {
            FastRpcError::Busy => Error::Busy,
            FastRpcError::TooLarge => Error::TooLarge,
            FastRpcError::InvalidArgument
            | FastRpcError::PermissionDenied
            | FastRpcError::BadDomain => Error::InvalidArgument,
            FastRpcError::ChannelDown => Error::Shutdown,
            FastRpcError::RemoteReset => Error::Cancelled,
            FastRpcError::Timeout => Error::Timeout,
            FastRpcError::NotSupported => Error::NotSupported,
            FastRpcError::NoMemory => Error::NoMemory,
            FastRpcError::Protocol(p) => Error::Protocol(p),
            FastRpcError::Aee(a) => Error::Remote(a.0),
        }
    }
}

impl fmt::Display for FastRpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FastRpcError::Busy => f.write_str("no free context, payload or session"),
            FastRpcError::TooLarge => f.write_str("call does not fit the preallocated payload"),
            FastRpcError::InvalidArgument => f.write_str("invalid argument"),
            FastRpcError::PermissionDenied => f.write_str("user invoke on the init handle"),
            FastRpcError::BadDomain => f.write_str("domain id out of range"),
            FastRpcError::ChannelDown => f.write_str("channel down"),
            FastRpcError::RemoteReset => f.write_str("DSP restarted with the call in flight"),
            FastRpcError::Timeout => f.write_str("timed out"),
            FastRpcError::NotSupported => f.write_str("not supported"),
            FastRpcError::NoMemory => f.write_str("out of memory at setup"),
            FastRpcError::Protocol(p) => write!(f, "protocol error from the DSP: {p}"),
            FastRpcError::Aee(a) => write!(f, "DSP returned AEE status {:#x}", a.0 as u32),
        }
    }
}

impl core::error::Error for FastRpcError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            FastRpcError::Aee(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for AeeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number() {
            Some(n) => write!(f, "DSP status AEE {n:#x}"),
            None => write!(f, "DSP status {:#x}", self.0 as u32),
        }
    }
}

impl core::error::Error for AeeError {}

/// Shorthand result of this crate.
pub type Result<T = ()> = core::result::Result<T, FastRpcError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aee_codes_are_offset_and_typed() {
        assert_eq!(aee::dsp(aee::EUNSUPPORTED) as u32, 0x8000_0414);
        assert_eq!(
            AeeError(aee::dsp(aee::EBADPARM)).number(),
            Some(aee::EBADPARM)
        );
        assert_eq!(AeeError(-1).number(), None);
        assert_eq!(
            Error::from(FastRpcError::Aee(AeeError(aee::dsp(0x14)))),
            Error::Remote(0x8000_0414u32 as i32)
        );
        assert_eq!(Error::from(FastRpcError::ChannelDown), Error::Shutdown);
    }

    #[test]
    fn aee_status_is_an_error_and_the_source_of_its_fastrpc_error() {
        use core::error::Error as _;
        let a = AeeError(aee::dsp(aee::EBADPARM));
        assert_eq!(alloc::format!("{a}"), "DSP status AEE 0xe");
        assert_eq!(alloc::format!("{}", AeeError(-1)), "DSP status 0xffffffff");
        let e = FastRpcError::Aee(a);
        let src = e.source().expect("the DSP status is the source");
        assert_eq!(alloc::format!("{src}"), "DSP status AEE 0xe");
        assert!(FastRpcError::Timeout.source().is_none());
    }
}
