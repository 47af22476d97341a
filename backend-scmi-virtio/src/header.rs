//! The SCMI message header: one little-endian 32-bit word in front of every message.
//!
//! | Bits  | Field                                                        |
//! |-------|--------------------------------------------------------------|
//! | 7:0   | message_id                                                   |
//! | 9:8   | type: 0 command/response, 2 delayed response, 3 notification |
//! | 17:10 | protocol_id                                                  |
//! | 27:18 | token (10 bits)                                              |
//! | 31:28 | reserved, 0                                                  |
//!
//! Hygiene (docs/protocols/scmi.md §8 item 14): [`Header::encode`](crate::header::Header::encode)
//! always writes zero reserved bits and a token masked to 10 bits;
//! [`Header::decode`](crate::header::Header::decode) rejects reserved bits and the unused type 1
//! (that type 1 is unused is **(unverified)** against DEN0056; Linux only warns about it).
//! Notification tokens are decoded but carry no meaning: matching code must ignore them.
//!
//! ```
//! use fwipc_scmi_virtio::header::{Header, MsgType};
//! let h = Header::command(0x15, 0x06, 42);
//! let w = h.encode();
//! assert_eq!(w, 0x06 | (0x15 << 10) | (42 << 18));
//! assert_eq!(Header::decode(w), Ok(h));
//! assert!(Header::decode(w | 0x1000_0000).is_err());
//! ```

use core::fmt;

/// Bits 7:0.
const MSG_ID_MASK: u32 = 0xFF;
/// Bits 9:8.
const TYPE_SHIFT: u32 = 8;
const TYPE_MASK: u32 = 0x3;
/// Bits 17:10.
const PROTO_SHIFT: u32 = 10;
const PROTO_MASK: u32 = 0xFF;
/// Bits 27:18.
const TOKEN_SHIFT: u32 = 18;
/// Token values are 10 bits wide.
pub const TOKEN_MASK: u16 = 0x3FF;
/// Number of distinct tokens (Linux `MSG_TOKEN_MAX`).
pub const TOKEN_COUNT: usize = 1024;
/// Bits 31:28, which must be zero.
pub const RESERVED_MASK: u32 = 0xF000_0000;
/// Bytes of the header on the wire.
pub const HEADER_LEN: usize = 4;

/// The message type field (bits 9:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// A command (A2P) and its synchronous response (same header).
    Command = 0,
    /// A delayed response (P2A, eventq) completing an asynchronous command.
    DelayedResponse = 2,
    /// A notification (P2A, eventq).
    Notification = 3,
}

impl MsgType {
    /// The 2-bit wire value.
    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// Decode the 2-bit wire value; type 1 is not a valid SCMI message type.
    pub const fn from_raw(v: u8) -> Option<MsgType> {
        match v {
            0 => Some(MsgType::Command),
            2 => Some(MsgType::DelayedResponse),
            3 => Some(MsgType::Notification),
            _ => None,
        }
    }
}

/// Why a header word was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderError {
    /// Bits 31:28 were not zero (the raw word is kept).
    ReservedBits(u32),
    /// The type field held a value that is not a valid SCMI type (1).
    UnknownType(u8),
    /// Fewer than 4 bytes were available.
    Truncated,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::ReservedBits(w) => write!(f, "SCMI header {w:#010x}: reserved bits set"),
            HeaderError::UnknownType(t) => write!(f, "SCMI header: unknown message type {t}"),
            HeaderError::Truncated => f.write_str("SCMI header: fewer than 4 bytes"),
        }
    }
}

impl core::error::Error for HeaderError {}

impl From<HeaderError> for fwipc_transport_api::ProtocolError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::Truncated => fwipc_transport_api::ProtocolError::Truncated,
            _ => fwipc_transport_api::ProtocolError::BadHeader,
        }
    }
}

impl From<HeaderError> for fwipc_transport_api::Error {
    fn from(e: HeaderError) -> Self {
        fwipc_transport_api::Error::Protocol(e.into())
    }
}

/// A decoded SCMI header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Message id within the protocol (bits 7:0).
    pub message_id: u8,
    /// Message type (bits 9:8).
    pub msg_type: MsgType,
    /// Protocol id (bits 17:10), e.g. 0x10 Base, 0x15 Sensor.
    pub protocol_id: u8,
    /// Sequence token (bits 27:18); only the low 10 bits are encoded.
    pub token: u16,
}

impl Header {
    /// A command header.
    pub const fn command(protocol_id: u8, message_id: u8, token: u16) -> Header {
        Header {
            message_id,
            msg_type: MsgType::Command,
            protocol_id,
            token: token & TOKEN_MASK,
        }
    }

    /// The 32-bit wire word: reserved bits zero, token masked to 10 bits.
    pub const fn encode(&self) -> u32 {
        (self.message_id as u32 & MSG_ID_MASK)
            | ((self.msg_type.raw() as u32 & TYPE_MASK) << TYPE_SHIFT)
            | ((self.protocol_id as u32 & PROTO_MASK) << PROTO_SHIFT)
            | (((self.token & TOKEN_MASK) as u32) << TOKEN_SHIFT)
    }

    /// The wire bytes (little-endian).
    pub const fn to_le_bytes(&self) -> [u8; HEADER_LEN] {
        self.encode().to_le_bytes()
    }

    /// Decode a header word, rejecting reserved bits and unknown types.
    pub const fn decode(w: u32) -> Result<Header, HeaderError> {
        if w & RESERVED_MASK != 0 {
            return Err(HeaderError::ReservedBits(w));
        }
        let t = ((w >> TYPE_SHIFT) & TYPE_MASK) as u8;
        let msg_type = match MsgType::from_raw(t) {
            Some(m) => m,
            None => return Err(HeaderError::UnknownType(t)),
        };
        Ok(Header {
            message_id: (w & MSG_ID_MASK) as u8,
            msg_type,
            protocol_id: ((w >> PROTO_SHIFT) & PROTO_MASK) as u8,
            token: ((w >> TOKEN_SHIFT) as u16) & TOKEN_MASK,
        })
    }

    /// Decode the first 4 bytes of `bytes` (little-endian).
    pub fn decode_bytes(bytes: &[u8]) -> Result<Header, HeaderError> {
        match bytes.first_chunk::<HEADER_LEN>() {
            Some(b) => Header::decode(u32::from_le_bytes(*b)),
            None => Err(HeaderError::Truncated),
        }
    }

    /// The `Request::target` the fwipc transport contract uses: `(protocol_id << 8) | message_id`.
    pub const fn target(&self) -> u32 {
        ((self.protocol_id as u32) << 8) | self.message_id as u32
    }

    /// Whether `other` is the same message identity (protocol + message id), ignoring type and
    /// token.
    pub const fn same_message(&self, other: &Header) -> bool {
        self.protocol_id == other.protocol_id && self.message_id == other.message_id
    }
}

/// Split a transport `target` (`(protocol_id << 8) | message_id`) into (protocol, message);
/// `None` if bits above 15 are set.
pub const fn split_target(target: u32) -> Option<(u8, u8)> {
    if target > 0xFFFF {
        None
    } else {
        Some(((target >> 8) as u8, target as u8))
    }
}

/// Build a transport `target` from (protocol, message).
pub const fn make_target(protocol_id: u8, message_id: u8) -> u32 {
    ((protocol_id as u32) << 8) | message_id as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_type() -> impl Strategy<Value = MsgType> {
        prop_oneof![
            Just(MsgType::Command),
            Just(MsgType::DelayedResponse),
            Just(MsgType::Notification)
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in any::<u8>(), t in any_type(), p in any::<u8>(), tok in 0u16..1024) {
            let h = Header { message_id: m, msg_type: t, protocol_id: p, token: tok };
            let w = h.encode();
            prop_assert_eq!(w & RESERVED_MASK, 0);
            prop_assert_eq!(Header::decode(w), Ok(h));
            prop_assert_eq!(Header::decode_bytes(&w.to_le_bytes()), Ok(h));
        }

        #[test]
        fn decode_never_panics_and_reencodes(w in any::<u32>()) {
            match Header::decode(w) {
                Ok(h) => prop_assert_eq!(h.encode(), w),
                Err(HeaderError::ReservedBits(x)) => {
                    prop_assert_eq!(x, w);
                    prop_assert_ne!(w & RESERVED_MASK, 0);
                }
                Err(HeaderError::UnknownType(t)) => {
                    prop_assert_eq!(t, 1);
                    prop_assert_eq!(w & RESERVED_MASK, 0);
                }
                Err(HeaderError::Truncated) => prop_assert!(false),
            }
        }

        #[test]
        fn encode_masks_wide_tokens(tok in any::<u16>()) {
            let h = Header { message_id: 1, msg_type: MsgType::Command, protocol_id: 0x10, token: tok };
            let w = h.encode();
            prop_assert_eq!(w & RESERVED_MASK, 0);
            prop_assert_eq!(Header::decode(w).unwrap().token, tok & TOKEN_MASK);
        }
    }

    #[test]
    fn rejects_reserved_bits_and_type_1() {
        for bit in 28..32 {
            let w = 1u32 << bit;
            assert_eq!(Header::decode(w), Err(HeaderError::ReservedBits(w)));
        }
        assert_eq!(
            Header::decode(0x0000_0100),
            Err(HeaderError::UnknownType(1))
        );
        assert_eq!(
            Header::decode_bytes(&[1, 2, 3]),
            Err(HeaderError::Truncated)
        );
    }

    #[test]
    fn known_wire_values() {
        // vhost-device-scmi's SENSOR_UPDATE notification header (docs/protocols/virtio.md §2).
        let h = Header::decode(0x5701).unwrap();
        assert_eq!(h.message_id, 1);
        assert_eq!(h.msg_type, MsgType::Notification);
        assert_eq!(h.protocol_id, 0x15);
        assert_eq!(h.token, 0);
        assert_eq!(h.target(), 0x1501);
        assert_eq!(split_target(0x1501), Some((0x15, 0x01)));
        assert_eq!(split_target(0x1_0000), None);
        assert_eq!(make_target(0x10, 6), 0x1006);
    }
}
