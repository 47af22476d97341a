//! The message header codec (docs/protocols/vchiq.md §2): `msgid = type<<24 | srcport<<12 |
//! dstport`, stride rounding, and a checked decoder for headers read from the peer's slots.

use crate::error::VchiqError;
use crate::wire::consts::{MsgType, VCHIQ_HEADER_SIZE, VCHIQ_MSGID_CLAIMED, VCHIQ_SLOT_SIZE};
use fwipc_transport_api::ProtocolError;

/// Pack a msgid. Ports are masked to 12 bits (so `PORT_FREE` goes out as 0, as in CLOSE).
pub const fn make_msgid(ty: MsgType, src: u32, dst: u32) -> u32 {
    ((ty as u32) << 24) | ((src & 0xFFF) << 12) | (dst & 0xFFF)
}

/// Bytes a message of `size` payload bytes occupies in a slot: `round_up(size + 8, 8)`.
pub const fn stride(size: usize) -> usize {
    (size + VCHIQ_HEADER_SIZE + 7) & !7
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub ty: MsgType,
    /// Sender's local port.
    pub src: u32,
    /// Receiver's port.
    pub dst: u32,
    /// Payload size.
    pub size: u32,
    /// Whether the receiver's CLAIMED bit is set.
    pub claimed: bool,
}

impl Header {
    /// Decode `msgid`/`size` found at `offset` within a slot, checking the message fits in the
    /// slot (`offset + stride <= 4096`) and the type is known.
    pub fn decode(msgid: u32, size: u32, offset: usize) -> Result<Header, VchiqError> {
        let claimed = msgid & VCHIQ_MSGID_CLAIMED != 0;
        let raw = msgid & !VCHIQ_MSGID_CLAIMED;
        let ty = MsgType::from_u8((raw >> 24) as u8)
            .ok_or(VchiqError::Protocol(ProtocolError::BadHeader))?;
        let sz = size as usize;
        if sz > VCHIQ_SLOT_SIZE
            || offset >= VCHIQ_SLOT_SIZE
            || offset + stride(sz) > VCHIQ_SLOT_SIZE
        {
            return Err(VchiqError::Protocol(ProtocolError::BadLength));
        }
        Ok(Header {
            ty,
            src: (raw >> 12) & 0xFFF,
            dst: raw & 0xFFF,
            size,
            claimed,
        })
    }

    /// This message's stride.
    pub fn stride(&self) -> usize {
        stride(self.size as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strides_from_spec() {
        for (s, st) in [
            (0, 8),
            (2, 16),
            (4, 16),
            (8, 16),
            (12, 24),
            (40, 48),
            (4088, 4096),
        ] {
            assert_eq!(stride(s), st, "size {s}");
        }
    }

    #[test]
    fn msgid_layout() {
        let m = make_msgid(MsgType::Open, 5, 0);
        assert_eq!(m, 0x0200_5000);
        let m = make_msgid(MsgType::Close, 7, crate::wire::consts::VCHIQ_PORT_FREE);
        assert_eq!(m & 0xFFF, 0, "FREE goes out as 0");
        let h =
            Header::decode(make_msgid(MsgType::Data, 3, 9) | VCHIQ_MSGID_CLAIMED, 4, 0).unwrap();
        assert_eq!((h.ty, h.src, h.dst, h.claimed), (MsgType::Data, 3, 9, true));
    }

    #[test]
    fn rejects_overflowing_and_unknown() {
        assert!(Header::decode(make_msgid(MsgType::Data, 1, 1), 4089, 0).is_err());
        assert!(Header::decode(make_msgid(MsgType::Data, 1, 1), 8, 4088).is_err());
        assert!(Header::decode(make_msgid(MsgType::Data, 1, 1), 0, 4088).is_ok());
        assert!(Header::decode(0x3F00_0000, 0, 0).is_err());
        assert!(Header::decode(make_msgid(MsgType::Data, 1, 1), u32::MAX, 0).is_err());
    }

    proptest! {
        #[test]
        fn encode_decode(ty in 0u8..=14, src in 0u32..4096, dst in 0u32..4096, size in 0u32..=4088) {
            let t = MsgType::from_u8(ty).unwrap();
            let h = Header::decode(make_msgid(t, src, dst), size, 0).unwrap();
            prop_assert_eq!((h.ty, h.src, h.dst, h.size, h.claimed), (t, src, dst, size, false));
            prop_assert!(h.stride().is_multiple_of(8) && h.stride() <= 4096);
        }

        #[test]
        fn decode_never_panics(msgid in any::<u32>(), size in any::<u32>(), off in 0usize..5000) {
            if let Ok(h) = Header::decode(msgid, size, off) {
                prop_assert!(off + h.stride() <= 4096);
            }
        }
    }
}
