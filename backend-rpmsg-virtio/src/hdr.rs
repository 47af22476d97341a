//! `struct rpmsg_hdr`: the 16-byte header in front of every rpmsg payload (docs/protocols/rpmsg.md
//! §2). Little-endian: the byte order of a virtio 1.0 device.

use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The rpmsg header.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct RpmsgHdr {
    /// Source endpoint address.
    pub src: U32,
    /// Destination endpoint address.
    pub dst: U32,
    /// Reserved (sent as zero, ignored on receive, as Linux does).
    pub reserved: U32,
    /// Payload length in bytes (untrusted on receive: checked against the buffer).
    pub len: U16,
    /// Message flags (none defined; sent as zero, ignored on receive).
    pub flags: U16,
}

const_assert_eq!(size_of::<RpmsgHdr>(), crate::addr::HDR_SIZE);
const_assert_eq!(offset_of!(RpmsgHdr, src), 0);
const_assert_eq!(offset_of!(RpmsgHdr, dst), 4);
const_assert_eq!(offset_of!(RpmsgHdr, reserved), 8);
const_assert_eq!(offset_of!(RpmsgHdr, len), 12);
const_assert_eq!(offset_of!(RpmsgHdr, flags), 14);

impl RpmsgHdr {
    /// A header for `len` payload bytes from `src` to `dst`, reserved and flags zero.
    pub fn new(src: u32, dst: u32, len: u16) -> Self {
        RpmsgHdr {
            src: U32::new(src),
            dst: U32::new(dst),
            reserved: U32::ZERO,
            len: U16::new(len),
            flags: U16::ZERO,
        }
    }

    /// The header's wire bytes, as [`crate::link::Link::send_parts`] and
    /// [`crate::link::Link::send_loan`] take them.
    pub fn to_bytes(&self) -> [u8; crate::addr::HDR_SIZE] {
        let mut b = [0u8; crate::addr::HDR_SIZE];
        b.copy_from_slice(self.as_bytes());
        b
    }
}
