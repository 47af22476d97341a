//! The arguments of a call and the scalars word they imply.

use crate::error::{FastRpcError, Result};
use crate::mem::SharedBuf;
use crate::wire::scalars::Scalars;

/// PD bits: root PD / audio attach.
pub const PD_ROOT: u8 = 0;
/// PD bits: dynamic user PD.
pub const PD_USER: u8 = 1;
/// PD bits: sensors PD attach.
pub const PD_SENSORS: u8 = 2;

/// One argument of a call. Order must be: in-buffers, out-buffers, in-handles, out-handles
/// (the scalars order); `start` refuses anything else.
#[derive(Debug)]
pub enum Arg<'a> {
    /// In-buffer, copied into the payload.
    In(&'a [u8]),
    /// Out-buffer, copied back from the payload by [`Session::invoke`](crate::Session::invoke).
    Out(&'a mut [u8]),
    /// Out-buffer of `len` bytes kept in the payload until [`Session::read_out`](crate::Session::read_out); `addr` is the
    /// caller's notional address (only used to order the inline copies, as Linux does).
    OutLen {
        /// Ordering address.
        addr: u64,
        /// Length.
        len: usize,
    },
    /// In-buffer living in a shared buffer (sent by page, not copied).
    InShared {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// Out-buffer living in a shared buffer (the DSP writes it directly).
    OutShared {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// In-handle: a shared buffer passed by descriptor.
    InHandle {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
    },
    /// Out-handle.
    OutHandle {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
    },
}

impl Arg<'_> {
    fn class(&self) -> usize {
        match self {
            Arg::In(_) | Arg::InShared { .. } => 0,
            Arg::Out(_) | Arg::OutLen { .. } | Arg::OutShared { .. } => 1,
            Arg::InHandle { .. } => 2,
            Arg::OutHandle { .. } => 3,
        }
    }
}

/// The scalars `args` imply for `method` (checked).
pub(crate) fn scalars_for(method: u32, args: &[Arg<'_>]) -> Result<Scalars> {
    let mut counts = [0u32; 4];
    let mut last = 0;
    for a in args {
        let c = a.class();
        if c < last {
            return Err(FastRpcError::InvalidArgument);
        }
        last = c;
        counts[c] += 1;
    }
    Scalars::new(method, counts[0], counts[1], counts[2], counts[3])
}
