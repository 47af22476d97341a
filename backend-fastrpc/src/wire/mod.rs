//! Wire structs, byte-exact (docs/protocols/fastrpc.md §4, §5, §7). Every field is an explicit
//! little-endian `zerocopy` type, so the layout is the same on any host and parsing never needs
//! alignment. Sizes and offsets are pinned with `static_assertions`.

pub(crate) mod layout;
pub(crate) mod layout_cache;
pub(crate) mod payload;
pub mod scalars;

use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::little_endian::{I32, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use fwipc_transport_api::ProtocolError;

/// Page size the payload layout is computed in.
pub const PAGE_SIZE: u64 = 4096;
/// Round `v` up to a multiple of `a` (a power of two); `None` on overflow.
pub const fn align_up(v: u64, a: u64) -> Option<u64> {
    match v.checked_add(a - 1) {
        Some(x) => Some(x & !(a - 1)),
        None => None,
    }
}

/// Pages spanned by `[addr, addr+len)` in bytes (one page for `len == 0`).
pub const fn pages_spanned(addr: u64, len: u64) -> u64 {
    let first = addr & !(PAGE_SIZE - 1);
    let last = addr.saturating_add(len.saturating_sub(1)) & !(PAGE_SIZE - 1);
    (last - first) + PAGE_SIZE
}

/// `FASTRPC_ALIGN`: inline copies start on 128-byte boundaries.
pub const FASTRPC_ALIGN: u64 = 128;
/// `FASTRPC_MAX_FDLIST`.
pub const MAX_FDLIST: usize = 16;
/// `FASTRPC_MAX_CRCLIST`.
pub const MAX_CRCLIST: usize = 64;
/// Process-control handle (`FASTRPC_INIT_HANDLE`); user invokes on it are refused.
pub const INIT_HANDLE: u32 = 1;
/// Attributes a `GET_DSP_INFO` query asks for (and a channel caches).
pub const DSP_ATTRIBUTES: usize = 256;

/// `struct fastrpc_msg`, AP → DSP (40 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct FastRpcMsg {
    /// Client id (session index + 1, the recent-kernel convention); 0 for process-control calls.
    pub pid: I32,
    /// Calling thread id.
    pub tid: I32,
    /// Context id (see [`CtxId`]) OR'd with the PD bits.
    pub ctx: U64,
    /// Remote object handle.
    pub handle: U32,
    /// Scalars.
    pub sc: U32,
    /// Payload bus address including `sid << 32`; 0 without a payload.
    pub addr: U64,
    /// Payload size rounded up to a page.
    pub size: U64,
}
const_assert_eq!(size_of::<FastRpcMsg>(), 40);
const_assert_eq!(offset_of!(FastRpcMsg, pid), 0);
const_assert_eq!(offset_of!(FastRpcMsg, tid), 4);
const_assert_eq!(offset_of!(FastRpcMsg, ctx), 8);
const_assert_eq!(offset_of!(FastRpcMsg, handle), 16);
const_assert_eq!(offset_of!(FastRpcMsg, sc), 20);
const_assert_eq!(offset_of!(FastRpcMsg, addr), 24);
const_assert_eq!(offset_of!(FastRpcMsg, size), 32);

/// `struct fastrpc_invoke_rsp`, DSP → AP (16 bytes including the tail padding).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct InvokeRsp {
    /// The context id the request carried.
    pub ctx: U64,
    /// `AEE_SUCCESS` (0) or a DSP status.
    pub retval: I32,
    /// Tail padding of the C struct.
    pub pad: [u8; 4],
}
const_assert_eq!(size_of::<InvokeRsp>(), 16);
const_assert_eq!(offset_of!(InvokeRsp, retval), 8);

const GEN_BITS: u32 = 52;
/// Mask of the generation bits a context id carries.
pub(crate) const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

/// A wire context id: PD in bits 0..3, slot id (1..=255) in bits 4..11 (`FASTRPC_CTXID_MASK`),
/// generation in bits 12..63 (echoed by the DSP; upstream ignores these bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtxId(pub u64);

impl CtxId {
    /// Compose an id.
    pub const fn new(slot_id: u8, generation: u64, pd: u8) -> Self {
        CtxId(((generation & GEN_MASK) << 12) | ((slot_id as u64) << 4) | (pd as u64 & 0xf))
    }
    /// The 8-bit slot id (`(ctx & 0xFF0) >> 4`).
    pub const fn slot_id(self) -> u8 {
        ((self.0 >> 4) & 0xff) as u8
    }
    /// The generation.
    pub const fn generation(self) -> u64 {
        self.0 >> 12
    }
    /// The PD bits.
    pub const fn pd(self) -> u8 {
        (self.0 & 0xf) as u8
    }
}

/// The context id of a response.
pub trait CtxIdExt {
    /// The `ctx` field as a [`CtxId`].
    fn ctx_id(&self) -> CtxId;
}

impl CtxIdExt for InvokeRsp {
    fn ctx_id(&self) -> CtxId {
        CtxId(self.ctx.get())
    }
}

/// Downstream `smq_invoke_rspv2` length (accepted and its extra fields ignored, as upstream).
pub const RSP_V2_LEN: usize = 24;

/// `union fastrpc_remote_arg`, buffer form `{u64 pv; u64 len}`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RemoteBuf {
    /// AP-side virtual address of the data (the DSP takes the in-page offset from it).
    pub pv: U64,
    /// Length in bytes.
    pub len: U64,
}
const_assert_eq!(size_of::<RemoteBuf>(), 16);

/// `union fastrpc_remote_arg`, dma-handle form `{s32 fd; u32 offset; u32 len}` (16 with padding).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RemoteDma {
    /// dma-buf fd.
    pub fd: I32,
    /// Offset (the low 32 bits of the user pointer).
    pub offset: U32,
    /// Length.
    pub len: U32,
    /// Rest of the union.
    pub pad: [u8; 4],
}
const_assert_eq!(size_of::<RemoteDma>(), 16);
const_assert_eq!(offset_of!(RemoteDma, len), 8);

/// `struct fastrpc_invoke_buf`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct InvokeBuf {
    /// Number of page entries (`len != 0`).
    pub num: U32,
    /// Index of the first page entry (= slot index).
    pub pgidx: U32,
}
const_assert_eq!(size_of::<InvokeBuf>(), 8);

/// `struct fastrpc_phy_page`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhyPage {
    /// Page-aligned bus address including `sid << 32`.
    pub addr: U64,
    /// Bytes of the pages spanned.
    pub size: U64,
}
const_assert_eq!(size_of::<PhyPage>(), 16);

/// Bytes of metadata per argument slot: remote arg + invoke buf + phy page.
pub const META_PER_SLOT: usize =
    size_of::<RemoteBuf>() + size_of::<InvokeBuf>() + size_of::<PhyPage>();
const_assert_eq!(META_PER_SLOT, 40);
/// Fixed metadata tail: fd list (16 × u64) + crc list (64 × u32).
pub const META_TAIL: usize = MAX_FDLIST * 8 + MAX_CRCLIST * 4;
const_assert_eq!(META_TAIL, 384);

/// `metalen = 40 * nscalars + 128 + 256` (docs/protocols/fastrpc.md §5).
pub const fn metalen(nscalars: usize) -> usize {
    META_PER_SLOT * nscalars + META_TAIL
}

/// Offsets of the metadata regions for `n` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaOffsets {
    /// Remote args start (always 0).
    pub rpra: usize,
    /// Invoke buf list.
    pub list: usize,
    /// Page list.
    pub pages: usize,
    /// fd list (right after the page list, where the kernel reads it).
    pub fdlist: usize,
    /// crc list (**(unverified)** position: after the fd list).
    pub crclist: usize,
    /// End of metadata (= `metalen`).
    pub end: usize,
}

impl MetaOffsets {
    /// Offsets for `n` argument slots.
    pub const fn new(n: usize) -> Self {
        let list = 16 * n;
        let pages = list + 8 * n;
        let fdlist = pages + 16 * n;
        let crclist = fdlist + MAX_FDLIST * 8;
        MetaOffsets {
            rpra: 0,
            list,
            pages,
            fdlist,
            crclist,
            end: crclist + MAX_CRCLIST * 4,
        }
    }
}

/// Process-control method ids on handle 1 (RMIDs, docs/protocols/fastrpc.md §7) and their scalars.
pub mod rmid {
    use crate::wire::scalars::Scalars;
    /// INIT_ATTACH.
    pub const ATTACH: u32 = 0;
    /// INIT_RELEASE.
    pub const RELEASE: u32 = 1;
    /// INIT_MMAP.
    pub const MMAP: u32 = 4;
    /// INIT_MUNMAP.
    pub const MUNMAP: u32 = 5;
    /// INIT_CREATE.
    pub const CREATE: u32 = 6;
    /// INIT_CREATE_ATTR.
    pub const CREATE_ATTR: u32 = 7;
    /// INIT_CREATE_STATIC.
    pub const CREATE_STATIC: u32 = 8;
    /// INIT_MEM_MAP.
    pub const MEM_MAP: u32 = 10;
    /// INIT_MEM_UNMAP.
    pub const MEM_UNMAP: u32 = 11;

    /// The scalars the DSP's method table expects for each RMID (CREATE_ATTR = 4 in, the 2023
    /// fix). `None` for an id that is not a process-control method.
    pub const fn scalars(id: u32) -> Option<Scalars> {
        Some(match id {
            ATTACH => Scalars::makex(0, 0, 1, 0, 0, 0),
            RELEASE => Scalars::makex(0, 1, 1, 0, 0, 0),
            MMAP => Scalars::makex(0, 4, 2, 1, 0, 0),
            MUNMAP => Scalars::makex(0, 5, 1, 0, 0, 0),
            CREATE => Scalars::makex(0, 6, 4, 0, 0, 0),
            CREATE_ATTR => Scalars::makex(0, 7, 4, 0, 0, 0),
            CREATE_STATIC => Scalars::makex(0, 8, 3, 0, 0, 0),
            MEM_MAP => Scalars::makex(0, 10, 3, 1, 0, 0),
            MEM_UNMAP => Scalars::makex(0, 11, 1, 0, 0, 0),
            _ => return None,
        })
    }
}

/// CREATE buffer 0 (24 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CreateReq {
    /// Process group id (client id).
    pub pgid: I32,
    /// Name length including NUL.
    pub namelen: U32,
    /// Init file length.
    pub filelen: U32,
    /// Page entries for the init memory (1).
    pub pageslen: U32,
    /// Process attributes.
    pub attrs: U32,
    /// Signature length.
    pub siglen: U32,
}
const_assert_eq!(size_of::<CreateReq>(), 24);

/// CREATE_STATIC buffer 0 (12 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CreateStaticReq {
    /// Process group id.
    pub pgid: I32,
    /// Name length.
    pub namelen: U32,
    /// Page entries (0).
    pub pageslen: U32,
}
const_assert_eq!(size_of::<CreateStaticReq>(), 12);

/// `mmap_req` (24 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmapReq {
    /// Process group id.
    pub pgid: I32,
    /// MMAP flags.
    pub flags: U32,
    /// Requested DSP address (0: any).
    pub vaddr: U64,
    /// Byte size of the page array (16).
    pub num: I32,
    /// Tail padding.
    pub pad: [u8; 4],
}
const_assert_eq!(size_of::<MmapReq>(), 24);
const_assert_eq!(offset_of!(MmapReq, vaddr), 8);
const_assert_eq!(offset_of!(MmapReq, num), 16);

/// `munmap_req` (24 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MunmapReq {
    /// Process group id.
    pub pgid: I32,
    /// Padding before the u64.
    pub pad: [u8; 4],
    /// DSP address.
    pub vaddr: U64,
    /// Size.
    pub size: U64,
}
const_assert_eq!(size_of::<MunmapReq>(), 24);
const_assert_eq!(offset_of!(MunmapReq, vaddr), 8);
const_assert_eq!(offset_of!(MunmapReq, size), 16);

/// `mem_map_req` (32 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MemMapReq {
    /// Process group id.
    pub pgid: I32,
    /// dma-buf fd.
    pub fd: I32,
    /// Offset into the buffer.
    pub offset: I32,
    /// Map flags.
    pub flags: U32,
    /// Requested DSP address.
    pub vaddrin: U64,
    /// Page entries.
    pub num: I32,
    /// Length of the data.
    pub data_len: I32,
}
const_assert_eq!(size_of::<MemMapReq>(), 32);
const_assert_eq!(offset_of!(MemMapReq, vaddrin), 16);
const_assert_eq!(offset_of!(MemMapReq, num), 24);
const_assert_eq!(offset_of!(MemMapReq, data_len), 28);

/// `mem_unmap_req` (24 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MemUnmapReq {
    /// Process group id.
    pub pgid: I32,
    /// dma-buf fd.
    pub fd: I32,
    /// DSP address.
    pub vaddrin: U64,
    /// Length.
    pub len: U64,
}
const_assert_eq!(size_of::<MemUnmapReq>(), 24);
const_assert_eq!(offset_of!(MemUnmapReq, vaddrin), 8);

/// MMAP flag: grow the user heap (`ADD_PAGES`).
pub const MMAP_ADD_PAGES: u32 = 0x1000;
/// MMAP flag: map into the remote heap.
pub const MMAP_REMOTE_HEAP_ADDR: u32 = 8;
/// Largest init file (`INIT_FILELEN_MAX`, 2 MiB since late 2019).
pub const INIT_FILELEN_MAX: usize = 2 << 20;
/// Longest PD name for CREATE_STATIC.
pub const PD_NAME_MAX: usize = 128;

/// Parse a response datagram: 16 bytes (or 24 for the downstream v2 form). Never panics.
pub fn parse_rsp(bytes: &[u8]) -> Result<InvokeRsp, ProtocolError> {
    if bytes.len() != size_of::<InvokeRsp>() && bytes.len() != RSP_V2_LEN {
        return Err(if bytes.len() < size_of::<InvokeRsp>() {
            ProtocolError::Truncated
        } else {
            ProtocolError::BadLength
        });
    }
    InvokeRsp::read_from_prefix(bytes)
        .map(|(r, _)| r)
        .map_err(|_| ProtocolError::Truncated)
}

/// Parse a request datagram (DSP side): exactly 40 bytes.
pub fn parse_msg(bytes: &[u8]) -> Result<FastRpcMsg, ProtocolError> {
    if bytes.len() != size_of::<FastRpcMsg>() {
        return Err(ProtocolError::BadLength);
    }
    FastRpcMsg::read_from_bytes(bytes).map_err(|_| ProtocolError::BadLength)
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_arithmetic() {
        assert_eq!(pages_spanned(0x1000, 1), 4096);
        assert_eq!(pages_spanned(0x1fff, 2), 8192);
        assert_eq!(pages_spanned(0x1000, 4096), 4096);
        assert_eq!(pages_spanned(0x1000, 0), 4096);
        assert_eq!(align_up(545, 128), Some(640));
        assert_eq!(align_up(u64::MAX, 128), None);
    }

    use super::*;

    #[test]
    fn metalen_matches_notes() {
        assert_eq!(metalen(4), 544);
        assert_eq!(metalen(2), 464);
        let m = MetaOffsets::new(4);
        assert_eq!(
            (m.list, m.pages, m.fdlist, m.crclist, m.end),
            (64, 96, 160, 288, 544)
        );
    }

    #[test]
    fn rmid_structs_golden_bytes() {
        use zerocopy::IntoBytes;
        let m = MmapReq {
            pgid: 3.into(),
            flags: MMAP_ADD_PAGES.into(),
            vaddr: 0x1122_3344_5566_7788.into(),
            num: 16.into(),
            pad: [0; 4],
        };
        #[rustfmt::skip]
        assert_eq!(m.as_bytes(), &[
            3, 0, 0, 0,             // pgid @0
            0x00, 0x10, 0, 0,       // flags @4 = ADD_PAGES 0x1000
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // vaddr @8
            16, 0, 0, 0,            // num @16 = sizeof(phy_page)
            0, 0, 0, 0,             // tail padding → 24
        ]);
        let mm = MemMapReq {
            pgid: 1.into(),
            fd: 7.into(),
            offset: 0x100.into(),
            flags: 0.into(),
            vaddrin: 0.into(),
            num: 16.into(),
            data_len: 0x2000.into(),
        };
        let b = mm.as_bytes();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[4..8], &[7, 0, 0, 0]);
        assert_eq!(&b[8..12], &[0, 1, 0, 0]);
        assert_eq!(&b[24..28], &[16, 0, 0, 0]);
        assert_eq!(&b[28..32], &[0, 0x20, 0, 0]);
        let c = CreateReq {
            pgid: 2.into(),
            namelen: 6.into(),
            filelen: 0x1234.into(),
            pageslen: 1.into(),
            attrs: 8.into(),
            siglen: 0.into(),
        };
        #[rustfmt::skip]
        assert_eq!(c.as_bytes(), &[
            2, 0, 0, 0,  6, 0, 0, 0,  0x34, 0x12, 0, 0,  1, 0, 0, 0,  8, 0, 0, 0,  0, 0, 0, 0,
        ]);
    }

    #[test]
    fn rsp_parse_is_strict_and_total() {
        assert_eq!(parse_rsp(&[0; 15]), Err(ProtocolError::Truncated));
        assert_eq!(parse_rsp(&[0; 17]), Err(ProtocolError::BadLength));
        let r = parse_rsp(&[
            0x10, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ])
        .unwrap();
        assert_eq!((r.ctx.get(), r.retval.get()), (0x10, -1));
        assert!(parse_rsp(&[0; 24]).is_ok());
    }
}
