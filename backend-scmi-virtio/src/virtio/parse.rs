//! Pure checks of everything the device hands back, one function per kind of remote input, so
//! they can be unit-tested, proptested and fuzzed without a device (see `super::fuzzing`,
//! doc-hidden). None of them indexes out of bounds or panics, whatever the input.

use fwipc_transport_api::ProtocolError;

use crate::header::{Header, MsgType, HEADER_LEN};

/// Header + status word in front of every response's return values.
pub const RESP_OVERHEAD: usize = 8;
/// Marker written over the response header before posting when the header left there could
/// pass for the reply ([`sentinel_needed`]): reserved bits set, so it never equals a header we
/// send; a chain returned with it still in place was not written.
pub const RESP_UNWRITTEN: u32 = 0xFFFF_FFFF;

/// Whether a send must write [`RESP_UNWRITTEN`] over the response area's header word `old`
/// before posting header `sent`: only when they are equal. A reply is accepted only with the
/// header sent ([`check_reply_header`]), so whatever else a chain returned unwritten still holds
/// (an earlier reply's header, the sentinel, zeros) fails the check as it is; the one header
/// that would pass is the one being sent, left by an earlier transfer with the same token,
/// protocol and message. Not writing the word otherwise leaves the response area's line in the
/// device's cache between round trips (docs/benchmarks.md, "Cache lines per round trip").
#[inline]
pub fn sentinel_needed(old: u32, sent: u32) -> bool {
    old == sent
}

/// Why a returned cmdq reply was rejected, and which counter it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// Used length beyond the writable descriptor.
    TooLong,
    /// Used length below header + status, or the header was never written.
    TooShort,
    /// The header word is not a valid SCMI header.
    BadHeader,
    /// A valid header with a token other than ours (counted as an unknown reply).
    WrongToken,
    /// Our token, but another protocol, message or type (docs/protocols/scmi.md §8 item 4).
    WrongMessage,
}

impl ReplyError {
    /// The API-level protocol error.
    pub const fn protocol_error(self) -> ProtocolError {
        match self {
            ReplyError::TooLong => ProtocolError::BadLength,
            ReplyError::TooShort => ProtocolError::Truncated,
            ReplyError::BadHeader => ProtocolError::BadHeader,
            ReplyError::WrongToken => ProtocolError::UnknownToken,
            ReplyError::WrongMessage => ProtocolError::UnexpectedMessage,
        }
    }
}

impl core::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ReplyError::TooLong => "reply length beyond the writable descriptor",
            ReplyError::TooShort => "reply shorter than header and status, or header not written",
            ReplyError::BadHeader => "reply header is not a valid SCMI header",
            ReplyError::WrongToken => "reply carries another transfer's token",
            ReplyError::WrongMessage => "reply names another protocol, message or type",
        })
    }
}

impl core::error::Error for ReplyError {}

/// Check a returned cmdq chain. `resp` is the whole device-writable area (as posted), `used_len`
/// the device's claim, `sent` the header word we sent. Returns the reply length (header + status
/// + return values, `RESP_OVERHEAD ..= resp.len()`).
pub fn check_reply(sent: u32, resp: &[u8], used_len: u32) -> Result<usize, ReplyError> {
    check_reply_header(
        sent,
        resp.first_chunk::<4>().copied().unwrap_or_default(),
        used_len,
        resp.len(),
    )
}

/// [`check_reply`] from a private copy of the response area's first 4 bytes (`hdr`; unused when
/// the area is shorter) and the area's size `resp_len`.
pub fn check_reply_header(
    sent: u32,
    hdr: [u8; 4],
    used_len: u32,
    resp_len: usize,
) -> Result<usize, ReplyError> {
    let len = usize::try_from(used_len).map_err(|_| ReplyError::TooLong)?;
    if len > resp_len {
        return Err(ReplyError::TooLong);
    }
    if len < RESP_OVERHEAD {
        return Err(ReplyError::TooShort);
    }
    let w = u32::from_le_bytes(hdr);
    if w == sent {
        return Ok(len);
    }
    if w == RESP_UNWRITTEN {
        return Err(ReplyError::TooShort);
    }
    let sent_token = Header::decode(sent).map(|h| h.token).ok();
    match Header::decode(w) {
        Err(_) => Err(ReplyError::BadHeader),
        Ok(h) if Some(h.token) != sent_token => Err(ReplyError::WrongToken),
        Ok(_) => Err(ReplyError::WrongMessage),
    }
}

/// Split a checked reply (`resp[..len]` from [`check_reply`]) into (status, return values).
pub fn split_reply(reply: &[u8]) -> Option<(i32, &[u8])> {
    let status = reply.get(4..RESP_OVERHEAD)?;
    let status = i32::from_le_bytes([status[0], status[1], status[2], status[3]]);
    Some((status, reply.get(RESP_OVERHEAD..)?))
}

/// Check a returned eventq buffer (`buf` = the whole posted buffer, `used_len` the device's
/// claim): one notification or delayed response. Returns (raw header, message length).
pub fn check_event(buf: &[u8], used_len: u32) -> Result<(u32, usize), ProtocolError> {
    check_event_header(
        buf.first_chunk::<4>().copied().unwrap_or_default(),
        used_len,
        buf.len(),
    )
}

/// [`check_event`] from a private copy of the buffer's first 4 bytes (`hdr`; unused when the
/// buffer is shorter) and the posted buffer's size `buf_len`.
pub fn check_event_header(
    hdr: [u8; 4],
    used_len: u32,
    buf_len: usize,
) -> Result<(u32, usize), ProtocolError> {
    let len = usize::try_from(used_len).map_err(|_| ProtocolError::BadLength)?;
    if len > buf_len {
        return Err(ProtocolError::BadLength);
    }
    if len < HEADER_LEN {
        return Err(ProtocolError::Truncated);
    }
    let w = u32::from_le_bytes(hdr);
    match Header::decode(w) {
        Err(e) => Err(e.into()),
        Ok(h) if h.msg_type == MsgType::Command => Err(ProtocolError::UnexpectedMessage),
        Ok(_) => Ok((w, len)),
    }
}

/// Map a cmdq used id to a message slot: chain heads are the even descriptors `2i`.
pub fn cmdq_slot(id: u32, slots: usize) -> Option<usize> {
    let i = usize::try_from(id / 2).ok()?;
    (id & 1 == 0 && i < slots).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdr(proto: u8, msg: u8, tok: u16) -> u32 {
        Header::command(proto, msg, tok).encode()
    }

    #[test]
    fn reply_checks() {
        let sent = hdr(0x81, 3, 77);
        let mut resp = [0u8; 16];
        resp[..4].copy_from_slice(&sent.to_le_bytes());
        assert_eq!(check_reply(sent, &resp, 12), Ok(12));
        assert_eq!(check_reply(sent, &resp, 17), Err(ReplyError::TooLong));
        assert_eq!(check_reply(sent, &resp, u32::MAX), Err(ReplyError::TooLong));
        assert_eq!(check_reply(sent, &resp, 7), Err(ReplyError::TooShort));
        resp[..4].copy_from_slice(&RESP_UNWRITTEN.to_le_bytes());
        assert_eq!(check_reply(sent, &resp, 8), Err(ReplyError::TooShort));
        resp[..4].copy_from_slice(&hdr(0x81, 4, 77).to_le_bytes());
        assert_eq!(check_reply(sent, &resp, 8), Err(ReplyError::WrongMessage));
        resp[..4].copy_from_slice(&hdr(0x81, 3, 78).to_le_bytes());
        assert_eq!(check_reply(sent, &resp, 8), Err(ReplyError::WrongToken));
        resp[..4].copy_from_slice(&(sent | 0x100).to_le_bytes());
        assert_eq!(check_reply(sent, &resp, 8), Err(ReplyError::BadHeader));
        resp[..4].copy_from_slice(&(sent | 0x200).to_le_bytes()); // delayed-response type
        assert_eq!(check_reply(sent, &resp, 8), Err(ReplyError::WrongMessage));
    }

    #[test]
    fn event_checks() {
        let n = Header {
            message_id: 1,
            msg_type: MsgType::Notification,
            protocol_id: 0x15,
            token: 0,
        };
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(check_event(&b, 12), Ok((n.encode(), 12)));
        assert_eq!(check_event(&b, 13), Err(ProtocolError::BadLength));
        assert_eq!(check_event(&b, 3), Err(ProtocolError::Truncated));
        b[..4].copy_from_slice(&hdr(0x15, 1, 0).to_le_bytes());
        assert_eq!(check_event(&b, 4), Err(ProtocolError::UnexpectedMessage));
    }

    #[test]
    fn slot_mapping() {
        assert_eq!(cmdq_slot(0, 4), Some(0));
        assert_eq!(cmdq_slot(6, 4), Some(3));
        assert_eq!(cmdq_slot(8, 4), None);
        assert_eq!(cmdq_slot(5, 4), None);
        assert_eq!(cmdq_slot(u32::MAX, 4), None);
    }

    proptest! {
        #[test]
        fn check_reply_never_accepts_a_foreign_header(sent in any::<u32>(), resp in proptest::collection::vec(any::<u8>(), 0..64), used in any::<u32>()) {
            if let Ok(len) = check_reply(sent, &resp, used) {
                prop_assert!(len >= RESP_OVERHEAD && len <= resp.len());
                prop_assert_eq!(u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]), sent);
                prop_assert!(split_reply(&resp[..len]).is_some());
            }
        }

        #[test]
        fn check_event_bounds(buf in proptest::collection::vec(any::<u8>(), 0..64), used in any::<u32>()) {
            if let Ok((_, len)) = check_event(&buf, used) {
                prop_assert!(len >= HEADER_LEN && len <= buf.len());
            }
        }
    }
}
