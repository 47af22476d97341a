//! The loopback reply record: what the remote writes into the reply ring. Parsed with zerocopy;
//! every field is validated before use.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// `"LOOP"` little-endian.
pub const MAGIC: u32 = 0x504f_4f4c;
/// Record kind: a reply to a request.
pub const KIND_REPLY: u32 = 0;

/// One record in the reply ring.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ReplyRecord {
    /// Must be [`MAGIC`].
    pub magic: u32,
    /// Token of the request answered.
    pub token: u32,
    /// The buffer (pool slot) the reply was written into, as a virtio used-ring element names its
    /// chain. The reply is written in place, so the token alone cannot say which buffer holds it:
    /// a record whose token is wrong would complete whichever transfer holds that token, with a
    /// buffer the remote never wrote. The transport accepts a record only when both agree.
    pub slot: u32,
    /// Reply length in the request's buffer.
    pub len: u32,
    /// [`KIND_REPLY`].
    pub kind: u32,
}

/// Bytes of one record on the ring.
pub const RECORD_SIZE: usize = 20;

const_assert_eq!(core::mem::size_of::<ReplyRecord>(), RECORD_SIZE);
const_assert_eq!(core::mem::offset_of!(ReplyRecord, token), 4);
const_assert_eq!(core::mem::offset_of!(ReplyRecord, slot), 8);
const_assert_eq!(core::mem::offset_of!(ReplyRecord, len), 12);
const_assert_eq!(core::mem::offset_of!(ReplyRecord, kind), 16);

/// Decode a record from raw ring bytes (any length: short input is zero-padded, never over-read).
pub fn decode(raw: &[u8]) -> ReplyRecord {
    let mut b = [0u8; RECORD_SIZE];
    let n = raw.len().min(RECORD_SIZE);
    b[..n].copy_from_slice(&raw[..n]);
    ReplyRecord::read_from_bytes(&b).unwrap_or(ReplyRecord::new_zeroed())
}
