//! Encoding and parsing of rpmsg buffers: header + payload, and the name-service payload
//! (docs/protocols/rpmsg.md §2, §3). Every parser takes a private copy of the remote's bytes and
//! returns a typed error; none panics, indexes out of bounds or allocates.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use crate::addr::{ADDR_ANY, BUF_SIZE, HDR_SIZE, NS_ADDR, RESERVED_ADDRESSES};
use crate::error::WireError;
use crate::hdr::RpmsgHdr;
use crate::name::Name;
use crate::ns_msg::{NsMsg, NS_CREATE, NS_DESTROY};

/// A parsed buffer: the header's addresses and where the payload lies in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Source endpoint address.
    pub src: u32,
    /// Destination endpoint address.
    pub dst: u32,
    /// Payload length (the payload is `buf[HDR_SIZE..HDR_SIZE + len]`).
    pub len: usize,
}

impl Frame {
    /// The payload bytes within the buffer the frame was parsed from.
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(HDR_SIZE..HDR_SIZE + self.len).unwrap_or(&[])
    }
}

/// Parse a received buffer of `buf.len()` bytes (the used length the peer reported, already
/// clamped by the ring to what was posted). As Linux's `rpmsg_recv_single`: the buffer must not
/// exceed [`BUF_SIZE`] and the header's `len` must fit in what follows the header.
pub fn parse_frame(buf: &[u8]) -> Result<Frame, WireError> {
    if buf.len() > BUF_SIZE {
        return Err(WireError::BadLength);
    }
    let (hdr, rest) = RpmsgHdr::read_from_prefix(buf).map_err(|_| WireError::Truncated)?;
    let len = hdr.len.get() as usize;
    if len > rest.len() {
        return Err(WireError::BadLength);
    }
    Ok(Frame {
        src: hdr.src.get(),
        dst: hdr.dst.get(),
        len,
    })
}

/// Write a frame from `src` to `dst` carrying `payload` into `out`; returns the bytes used.
pub fn write_frame(out: &mut [u8], src: u32, dst: u32, payload: &[u8]) -> Result<usize, WireError> {
    let total = HDR_SIZE + payload.len();
    if total > BUF_SIZE || total > out.len() {
        return Err(WireError::TooLarge);
    }
    let hdr = RpmsgHdr::new(src, dst, payload.len() as u16);
    out[..HDR_SIZE].copy_from_slice(hdr.as_bytes());
    out[HDR_SIZE..total].copy_from_slice(payload);
    Ok(total)
}

/// A name-service announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsAnnounce {
    /// The service's name.
    pub name: Name,
    /// Its endpoint address on the announcing side.
    pub addr: u32,
    /// `true` for destroy, `false` for create.
    pub destroy: bool,
}

/// Parse the payload of a message to [`NS_ADDR`]. Like Linux's `rpmsg_ns_cb`, the payload must
/// be exactly 40 bytes. Unknown flag bits and unterminated names are refused (Linux ignores the
/// former and truncates the latter); docs/protocols/rpmsg.md §3.
pub fn parse_ns(payload: &[u8]) -> Result<NsAnnounce, WireError> {
    let msg = NsMsg::read_from_bytes(payload).map_err(|_| {
        if payload.len() < core::mem::size_of::<NsMsg>() {
            WireError::Truncated
        } else {
            WireError::BadLength
        }
    })?;
    let destroy = match msg.flags.get() {
        NS_CREATE => false,
        NS_DESTROY => true,
        _ => return Err(WireError::BadNsFlags),
    };
    let addr = msg.addr.get();
    if addr == ADDR_ANY || addr == NS_ADDR {
        return Err(WireError::BadNsAddr);
    }
    Ok(NsAnnounce {
        name: Name::from_wire(&msg.name)?,
        addr,
        destroy,
    })
}

/// The name-service payload announcing `a`.
pub fn ns_payload(a: &NsAnnounce) -> NsMsg {
    NsMsg {
        name: a.name.wire(),
        addr: U32::new(a.addr),
        flags: U32::new(if a.destroy { NS_DESTROY } else { NS_CREATE }),
    }
}

/// Whether `addr` lies in the range the endpoint table allocates from.
pub const fn is_dynamic(addr: u32) -> bool {
    addr >= RESERVED_ADDRESSES && addr < crate::addr::TRANSFER_ADDR_BASE
}
