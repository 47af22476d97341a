//! `struct rpmsg_ns_msg`: the 40-byte name-service announcement (docs/protocols/rpmsg.md §3).

use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::addr::NAME_SIZE;

/// `RPMSG_NS_CREATE`: the service at `addr` appeared.
pub const NS_CREATE: u32 = 0;
/// `RPMSG_NS_DESTROY`: the service at `addr` went away.
pub const NS_DESTROY: u32 = 1;

/// A name-service message, the payload of a message to [`NS_ADDR`](crate::addr::NS_ADDR).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct NsMsg {
    /// Service name, NUL-padded.
    pub name: [u8; NAME_SIZE],
    /// The service's endpoint address.
    pub addr: U32,
    /// [`NS_CREATE`] or [`NS_DESTROY`].
    pub flags: U32,
}

const_assert_eq!(size_of::<NsMsg>(), 40);
const_assert_eq!(offset_of!(NsMsg, name), 0);
const_assert_eq!(offset_of!(NsMsg, addr), 32);
const_assert_eq!(offset_of!(NsMsg, flags), 36);
