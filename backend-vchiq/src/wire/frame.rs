//! The fwipc framing inside VCHIQ DATA messages, used by [`crate::transport::VchiqTransport`]:
//! `{u32 token, u32 len}` then `len` payload bytes. VCHIQ itself has no request/reply
//! correlation; the token gives it (and lets late, duplicate and unknown replies be told apart).
//! Token bit 31 marks a remote-initiated message (notification). Little-endian.
//!
//! A request's token names its transfer twice ([`request_token`]): the transfer table's 16-bit
//! token in bits 0..=15 and the transfer's buffer in bits 16..=30. The remote echoes the word
//! back whole, and a reply is taken only when both names agree, so a reply under a damaged or
//! forged token does not complete another transfer that happens to hold the token it now reads
//! (a token alone would be taken for that transfer's reply: the remote's bytes, a wrong answer
//! to its caller).

use fwipc_transport_api::ProtocolError;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The frame header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FrameHeader {
    /// Request token, or `NOTIFY | seq`.
    pub token: U32,
    /// Payload length.
    pub len: U32,
}
static_assertions::const_assert_eq!(core::mem::size_of::<FrameHeader>(), 8);
static_assertions::const_assert_eq!(core::mem::offset_of!(FrameHeader, len), 4);

impl FrameHeader {
    /// The header of a frame with `token` and `len` payload bytes.
    pub fn new(token: u32, len: u32) -> Self {
        FrameHeader {
            token: U32::new(token),
            len: U32::new(len),
        }
    }
}

/// Bits of a request token that hold the transfer table's token ([`request_token`]).
pub const TOKEN_BITS: u32 = 16;
/// Transfers a request token can name: buffer indexes below this fit bits 16..=30.
pub const MAX_TRANSFERS: usize = 1 << 15;

/// The request token of the transfer with table token `token` (below `1 << TOKEN_BITS`) and
/// buffer index `slot` (below [`MAX_TRANSFERS`]); bit 31 stays clear.
pub const fn request_token(token: u32, slot: u32) -> u32 {
    (token & ((1 << TOKEN_BITS) - 1)) | ((slot & (MAX_TRANSFERS as u32 - 1)) << TOKEN_BITS)
}

/// A reply's request token as (table token, buffer index), for a word without [`NOTIFY`].
pub const fn split_request_token(word: u32) -> (u32, u32) {
    (
        word & ((1 << TOKEN_BITS) - 1),
        (word >> TOKEN_BITS) & (MAX_TRANSFERS as u32 - 1),
    )
}

/// Size of the frame header.
pub const FRAME_HEADER: usize = 8;
/// Token bit of a remote-initiated message.
pub const NOTIFY: u32 = 0x8000_0000;
/// Largest payload in one frame.
pub const MAX_FRAME_PAYLOAD: usize = crate::wire::consts::VCHIQ_MAX_MSG_SIZE - FRAME_HEADER;

/// Split a received message into header and payload, checking the length: [`split`] then
/// [`payload`]. The transport's receive path runs exactly these two steps.
pub fn parse(msg: &[u8]) -> Result<(FrameHeader, &[u8]), ProtocolError> {
    let (h, rest) = split(msg)?;
    Ok((h, payload(&h, rest)?))
}

/// Read the header; `Truncated` when the message is shorter than one. The rest is returned
/// unchecked, so a caller can still act on the token of a frame whose length lies (the transport
/// fails the matching transfer rather than leave it to time out).
pub fn split(msg: &[u8]) -> Result<(FrameHeader, &[u8]), ProtocolError> {
    FrameHeader::read_from_prefix(msg).map_err(|_| ProtocolError::Truncated)
}

/// The payload of a split frame: `rest` when the header's length matches it, else `BadLength`.
pub fn payload<'a>(h: &FrameHeader, rest: &'a [u8]) -> Result<&'a [u8], ProtocolError> {
    if h.len.get() as usize != rest.len() {
        return Err(ProtocolError::BadLength);
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_checks_len() {
        let mut m = [0u8; 12];
        m[0..4].copy_from_slice(&7u32.to_le_bytes());
        m[4..8].copy_from_slice(&4u32.to_le_bytes());
        let (h, p) = parse(&m).unwrap();
        assert_eq!((h.token.get(), p.len()), (7, 4));
        m[4] = 5;
        assert_eq!(parse(&m), Err(ProtocolError::BadLength));
        assert_eq!(parse(&m[..7]), Err(ProtocolError::Truncated));
    }

    proptest! {
        #[test]
        fn never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((h, p)) = parse(&d) { prop_assert_eq!(h.len.get() as usize, p.len()); }
        }
    }
}
