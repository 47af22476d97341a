//! vc-sm-cma `'SMEM'` wire formats (docs/protocols/vchiq.md §8; field layout from `vc_sm_defs.h`).
//!
//! Host→VC DATA messages are `{u32 type, u32 trans_id, body}`; replies start with the request's
//! `trans_id`; VC-initiated messages carry `trans_id = 0x8000_0000 | type`. All words are
//! little-endian; every struct is `#[repr(C)]` with byte-order-explicit fields, so it is
//! unaligned-safe and host-endian independent, and its size is asserted at compile time.
//!
//! Failure replies: the real firmware signals a failed ALLOC/IMPORT/LOCK with a null
//! handle/address (unverified). Our simulated VideoCore instead answers any failed request with
//! the 8-byte generic result `{trans_id, status < 0}`; the client accepts both forms. Handles issued
//! by the simulator never have bit 31 set, so an 8-byte reply whose second word is negative is
//! unambiguously a status.

use static_assertions::const_assert_eq;
use zerocopy::little_endian::{I32, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use fwipc_transport_api::ProtocolError;

/// Length of the resource name field.
pub const NAME_LEN: usize = 32;
/// Protocol version this client announces with CLIENT_VERSION (2 = handles RELEASED and
/// VC_MEM_REQUEST).
pub const CLIENT_PROTOCOL_VERSION: u32 = 2;
/// Bit set in the `trans_id` of VC-initiated messages.
pub const VC_INITIATED: u32 = 0x8000_0000;
/// The largest host→VC message (header + the largest body, 52 bytes).
pub const MAX_REQUEST_LEN: usize = 8 + 52;
/// The largest VC→host message we expect (the 52-byte VC_MEM_REQUEST).
pub const MAX_REPLY_LEN: usize = 52;

/// `'SMEM'` message types (the numbering is the wire's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SmemMsgType {
    /// Allocate a block in VideoCore memory.
    Alloc = 0,
    /// Lock (pin) a block.
    Lock = 1,
    /// Unlock a block.
    Unlock = 2,
    /// Unlock, no answer.
    UnlockNoAns = 3,
    /// Free a block or import.
    Free = 4,
    /// Resize a block.
    Resize = 5,
    /// Walk the allocations (debug).
    WalkAlloc = 6,
    /// Revert a previous action.
    ActionClean = 7,
    /// Wrap a host bus address into a VideoCore handle.
    Import = 8,
    /// Announce the client's protocol version.
    ClientVersion = 9,
    /// Host's answer to a VC_MEM_REQUEST.
    VcMemRequestReply = 10,
    /// VC→host: the VideoCore dropped an import.
    Released = 11,
    /// VC→host: the VideoCore asks the host for memory.
    VcMemRequest = 12,
}

impl SmemMsgType {
    /// Decode a wire type.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Alloc,
            1 => Self::Lock,
            2 => Self::Unlock,
            3 => Self::UnlockNoAns,
            4 => Self::Free,
            5 => Self::Resize,
            6 => Self::WalkAlloc,
            7 => Self::ActionClean,
            8 => Self::Import,
            9 => Self::ClientVersion,
            10 => Self::VcMemRequestReply,
            11 => Self::Released,
            12 => Self::VcMemRequest,
            _ => return None,
        })
    }
}

/// Memory type of an ALLOC / IMPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SmemAllocType {
    /// Cached on the VideoCore.
    Cached = 0,
    /// Not cached.
    NonCached = 1,
}

/// Host→VC header `vc_sm_msg_hdr_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemMsgHdr {
    /// [`SmemMsgType`].
    pub msg_type: U32,
    /// Host transaction id (bit 31 clear).
    pub trans_id: U32,
}

/// ALLOC body `vc_sm_alloc_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemAlloc {
    /// [`SmemAllocType`].
    pub alloc_type: U32,
    /// Bytes per unit.
    pub base_unit: U32,
    /// Number of units.
    pub num_unit: U32,
    /// Alignment (0 = default).
    pub alignment: U32,
    /// Allocator identity.
    pub allocator: U32,
    /// NUL-terminated name.
    pub name: [u8; NAME_LEN],
}

/// ALLOC reply `vc_sm_alloc_result_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemAllocResult {
    /// Echoed transaction id.
    pub trans_id: U32,
    /// VideoCore handle (0 = failed).
    pub res_handle: U32,
    /// VideoCore bus address of the block.
    pub res_mem: U32,
    /// Bytes per unit.
    pub res_base_size: U32,
    /// Number of units.
    pub res_num: U32,
}

/// FREE / LOCK / UNLOCK body `vc_sm_free_t` / `vc_sm_lock_unlock_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemHandleMsg {
    /// Handle from ALLOC / IMPORT.
    pub res_handle: U32,
    /// Address from ALLOC (0 for imports).
    pub res_mem: U32,
}

/// RESIZE body `vc_sm_resize_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemResize {
    /// Handle.
    pub res_handle: U32,
    /// Address.
    pub res_mem: U32,
    /// New size in bytes.
    pub res_new_size: U32,
}

/// LOCK reply `vc_sm_lock_result_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemLockResult {
    /// Echoed transaction id.
    pub trans_id: U32,
    /// Handle.
    pub res_handle: U32,
    /// Current address of the block (0 = failed).
    pub res_mem: U32,
    /// Former address if the block moved.
    pub res_old_mem: U32,
}

/// Generic reply `vc_sm_result_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemResult {
    /// Echoed transaction id.
    pub trans_id: U32,
    /// 0 = success, otherwise a status (see [`super::error::SmemStatus`]).
    pub success: I32,
}

/// ACTION_CLEAN body `vc_sm_action_clean_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemActionClean {
    /// The [`SmemMsgType`] of the action to revert.
    pub res_action: U32,
    /// Its transaction id.
    pub action_trans_id: U32,
}

/// IMPORT body `vc_sm_import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemImportMsg {
    /// [`SmemAllocType`].
    pub alloc_type: U32,
    /// Bus address (the 0xC000_0000 uncached alias is expected).
    pub addr: U32,
    /// Size in bytes.
    pub size: U32,
    /// Host's opaque id, returned in RELEASED. An ID-table index, never a pointer (§9 item 12).
    pub kernel_id: U32,
    /// Allocator identity.
    pub allocator: U32,
    /// NUL-terminated name.
    pub name: [u8; NAME_LEN],
}

/// IMPORT reply `vc_sm_import_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemImportResult {
    /// Echoed transaction id.
    pub trans_id: U32,
    /// VideoCore MEM_HANDLE (0 = failed).
    pub res_handle: U32,
}

/// VC→host RELEASED `vc_sm_released`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemReleased {
    /// `0x8000_0000 | RELEASED`.
    pub cmd: U32,
    /// Bus address of the import.
    pub addr: U32,
    /// Size.
    pub size: U32,
    /// The host's kernel_id from IMPORT.
    pub kernel_id: U32,
    /// The VideoCore handle.
    pub vc_handle: U32,
}

/// CLIENT_VERSION body `vc_sm_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemVersion {
    /// Protocol version ([`CLIENT_PROTOCOL_VERSION`]).
    pub version: U32,
}

/// VC→host VC_MEM_REQUEST `vc_sm_vc_mem_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemVcMemRequest {
    /// `0x8000_0000 | VC_MEM_REQUEST`.
    pub cmd: U32,
    /// VideoCore's transaction id (echo it in the reply).
    pub trans_id: U32,
    /// Bytes wanted.
    pub size: U32,
    /// Alignment wanted.
    pub align: U32,
    /// Name.
    pub name: [u8; NAME_LEN],
    /// VideoCore handle of the resource.
    pub vc_handle: U32,
}

/// Host→VC VC_MEM_REQUEST_REPLY body `vc_sm_vc_mem_request_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SmemVcMemRequestResult {
    /// The VideoCore's transaction id.
    pub trans_id: U32,
    /// Bus address of the memory (0 = refused).
    pub addr: U32,
    /// Host's id for the memory.
    pub kernel_id: U32,
}

const_assert_eq!(core::mem::size_of::<SmemMsgHdr>(), 8);
const_assert_eq!(core::mem::size_of::<SmemAlloc>(), 52);
const_assert_eq!(core::mem::offset_of!(SmemAlloc, name), 20);
const_assert_eq!(core::mem::size_of::<SmemAllocResult>(), 20);
const_assert_eq!(core::mem::size_of::<SmemHandleMsg>(), 8);
const_assert_eq!(core::mem::size_of::<SmemResize>(), 12);
const_assert_eq!(core::mem::size_of::<SmemLockResult>(), 16);
const_assert_eq!(core::mem::size_of::<SmemResult>(), 8);
const_assert_eq!(core::mem::size_of::<SmemActionClean>(), 8);
const_assert_eq!(core::mem::size_of::<SmemImportMsg>(), 52);
const_assert_eq!(core::mem::offset_of!(SmemImportMsg, kernel_id), 12);
const_assert_eq!(core::mem::offset_of!(SmemImportMsg, name), 20);
const_assert_eq!(core::mem::size_of::<SmemImportResult>(), 8);
const_assert_eq!(core::mem::size_of::<SmemReleased>(), 20);
const_assert_eq!(core::mem::size_of::<SmemVersion>(), 4);
const_assert_eq!(core::mem::size_of::<SmemVcMemRequest>(), 52);
const_assert_eq!(core::mem::offset_of!(SmemVcMemRequest, vc_handle), 48);
const_assert_eq!(core::mem::size_of::<SmemVcMemRequestResult>(), 12);
const_assert_eq!(8 + core::mem::size_of::<SmemAlloc>(), MAX_REQUEST_LEN);

/// Copy `name` into a NUL-terminated 32-byte field (at most 31 bytes kept).
pub fn name_field(name: &[u8]) -> [u8; NAME_LEN] {
    let mut f = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN - 1);
    f[..n].copy_from_slice(&name[..n]);
    f
}

/// The bytes of a name field up to its first NUL (the whole field if it has none: a hostile peer
/// need not terminate it).
pub fn name_str(field: &[u8; NAME_LEN]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    &field[..end]
}

/// A parsed host→VC request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmemRequest {
    /// ALLOC.
    Alloc(SmemAlloc),
    /// LOCK.
    Lock(SmemHandleMsg),
    /// UNLOCK.
    Unlock(SmemHandleMsg),
    /// UNLOCK_NOANS.
    UnlockNoAns(SmemHandleMsg),
    /// FREE.
    Free(SmemHandleMsg),
    /// RESIZE.
    Resize(SmemResize),
    /// WALK_ALLOC (no body).
    WalkAlloc,
    /// ACTION_CLEAN.
    ActionClean(SmemActionClean),
    /// IMPORT.
    Import(SmemImportMsg),
    /// CLIENT_VERSION.
    ClientVersion(SmemVersion),
    /// VC_MEM_REQUEST_REPLY.
    VcMemRequestReply(SmemVcMemRequestResult),
}

impl SmemRequest {
    /// The wire type.
    pub fn msg_type(&self) -> SmemMsgType {
        match self {
            SmemRequest::Alloc(_) => SmemMsgType::Alloc,
            SmemRequest::Lock(_) => SmemMsgType::Lock,
            SmemRequest::Unlock(_) => SmemMsgType::Unlock,
            SmemRequest::UnlockNoAns(_) => SmemMsgType::UnlockNoAns,
            SmemRequest::Free(_) => SmemMsgType::Free,
            SmemRequest::Resize(_) => SmemMsgType::Resize,
            SmemRequest::WalkAlloc => SmemMsgType::WalkAlloc,
            SmemRequest::ActionClean(_) => SmemMsgType::ActionClean,
            SmemRequest::Import(_) => SmemMsgType::Import,
            SmemRequest::ClientVersion(_) => SmemMsgType::ClientVersion,
            SmemRequest::VcMemRequestReply(_) => SmemMsgType::VcMemRequestReply,
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            SmemRequest::Alloc(b) => b.as_bytes(),
            SmemRequest::Lock(b)
            | SmemRequest::Unlock(b)
            | SmemRequest::UnlockNoAns(b)
            | SmemRequest::Free(b) => b.as_bytes(),
            SmemRequest::Resize(b) => b.as_bytes(),
            SmemRequest::WalkAlloc => &[],
            SmemRequest::ActionClean(b) => b.as_bytes(),
            SmemRequest::Import(b) => b.as_bytes(),
            SmemRequest::ClientVersion(b) => b.as_bytes(),
            SmemRequest::VcMemRequestReply(b) => b.as_bytes(),
        }
    }

    /// Encode `{type, trans_id, body}` into `out`; returns the length. `out` must hold
    /// [`MAX_REQUEST_LEN`] bytes (the buffer type guarantees it).
    pub fn encode(&self, trans_id: u32, out: &mut [u8; MAX_REQUEST_LEN]) -> usize {
        let hdr = SmemMsgHdr {
            msg_type: U32::new(self.msg_type() as u32),
            trans_id: U32::new(trans_id),
        };
        let body = self.body();
        out[..8].copy_from_slice(hdr.as_bytes());
        out[8..8 + body.len()].copy_from_slice(body);
        8 + body.len()
    }

    /// Parse a host→VC message (VideoCore side). Trailing bytes beyond the body are ignored;
    /// a short body or unknown type is an error.
    pub fn parse(msg: &[u8]) -> Result<(u32, SmemRequest), ProtocolError> {
        let (hdr, body) =
            SmemMsgHdr::read_from_prefix(msg).map_err(|_| ProtocolError::Truncated)?;
        let trans_id = hdr.trans_id.get();
        let ty = SmemMsgType::from_u32(hdr.msg_type.get()).ok_or(ProtocolError::BadHeader)?;
        fn body_of<T: FromBytes>(b: &[u8]) -> Result<T, ProtocolError> {
            T::read_from_prefix(b)
                .map(|(t, _)| t)
                .map_err(|_| ProtocolError::Truncated)
        }
        let req = match ty {
            SmemMsgType::Alloc => SmemRequest::Alloc(body_of(body)?),
            SmemMsgType::Lock => SmemRequest::Lock(body_of(body)?),
            SmemMsgType::Unlock => SmemRequest::Unlock(body_of(body)?),
            SmemMsgType::UnlockNoAns => SmemRequest::UnlockNoAns(body_of(body)?),
            SmemMsgType::Free => SmemRequest::Free(body_of(body)?),
            SmemMsgType::Resize => SmemRequest::Resize(body_of(body)?),
            SmemMsgType::WalkAlloc => SmemRequest::WalkAlloc,
            SmemMsgType::ActionClean => SmemRequest::ActionClean(body_of(body)?),
            SmemMsgType::Import => SmemRequest::Import(body_of(body)?),
            SmemMsgType::ClientVersion => SmemRequest::ClientVersion(body_of(body)?),
            SmemMsgType::VcMemRequestReply => SmemRequest::VcMemRequestReply(body_of(body)?),
            // VC→host types are never valid host→VC.
            SmemMsgType::Released | SmemMsgType::VcMemRequest => {
                return Err(ProtocolError::UnexpectedMessage)
            }
        };
        Ok((trans_id, req))
    }
}

/// A parsed VC→host message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmemReply<'a> {
    /// A reply to the host's request `trans_id` (bit 31 clear); `bytes` is the whole message.
    Reply {
        /// Transaction id it answers.
        trans_id: u32,
        /// The whole reply, starting with the trans_id word.
        bytes: &'a [u8],
    },
    /// VC-initiated RELEASED.
    Released(SmemReleased),
    /// VC-initiated VC_MEM_REQUEST.
    VcMemRequest(SmemVcMemRequest),
}

impl<'a> SmemReply<'a> {
    /// Classify a VC→host message (host side). Never reads out of bounds.
    pub fn parse(msg: &'a [u8]) -> Result<Self, ProtocolError> {
        let (w0, _) = U32::read_from_prefix(msg).map_err(|_| ProtocolError::Truncated)?;
        let w0 = w0.get();
        if w0 & VC_INITIATED == 0 {
            return Ok(SmemReply::Reply {
                trans_id: w0,
                bytes: msg,
            });
        }
        match SmemMsgType::from_u32(w0 & !VC_INITIATED) {
            Some(SmemMsgType::Released) => SmemReleased::read_from_prefix(msg)
                .map(|(r, _)| SmemReply::Released(r))
                .map_err(|_| ProtocolError::Truncated),
            Some(SmemMsgType::VcMemRequest) => SmemVcMemRequest::read_from_prefix(msg)
                .map(|(r, _)| SmemReply::VcMemRequest(r))
                .map_err(|_| ProtocolError::Truncated),
            _ => Err(ProtocolError::BadHeader),
        }
    }
}

/// What a reply to one request turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBody<T> {
    /// The full, typed reply.
    Ok(T),
    /// A generic failure result with this (non-zero) status.
    Failed(i32),
}

/// Parse the reply `bytes` (which answers a request whose reply type is `T`). Accepts the full
/// `T`, or an 8-byte [`SmemResult`] whose status is negative. For requests answered by the generic
/// result itself use [`parse_result`].
pub fn parse_reply<T: FromBytes>(bytes: &[u8]) -> Result<ReplyBody<T>, ProtocolError> {
    if bytes.len() == core::mem::size_of::<SmemResult>() {
        if let Ok((g, _)) = SmemResult::read_from_prefix(bytes) {
            if g.success.get() < 0 {
                return Ok(ReplyBody::Failed(g.success.get()));
            }
        }
    }
    T::read_from_prefix(bytes)
        .map(|(t, _)| ReplyBody::Ok(t))
        .map_err(|_| ProtocolError::Truncated)
}

/// Parse a generic [`SmemResult`] reply: any non-zero `success` is a failure.
pub fn parse_result(bytes: &[u8]) -> Result<ReplyBody<SmemResult>, ProtocolError> {
    let (g, _) = SmemResult::read_from_prefix(bytes).map_err(|_| ProtocolError::Truncated)?;
    Ok(match g.success.get() {
        0 => ReplyBody::Ok(g),
        c => ReplyBody::Failed(c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_name() -> impl Strategy<Value = [u8; NAME_LEN]> {
        proptest::collection::vec(1u8..=255, 0..40).prop_map(|v| name_field(&v))
    }

    fn arb_request() -> impl Strategy<Value = SmemRequest> {
        let hm = (any::<u32>(), any::<u32>()).prop_map(|(h, m)| SmemHandleMsg {
            res_handle: U32::new(h),
            res_mem: U32::new(m),
        });
        prop_oneof![
            (any::<[u32; 5]>(), arb_name()).prop_map(|(w, name)| SmemRequest::Alloc(SmemAlloc {
                alloc_type: U32::new(w[0]),
                base_unit: U32::new(w[1]),
                num_unit: U32::new(w[2]),
                alignment: U32::new(w[3]),
                allocator: U32::new(w[4]),
                name
            })),
            hm.clone().prop_map(SmemRequest::Lock),
            hm.clone().prop_map(SmemRequest::Unlock),
            hm.clone().prop_map(SmemRequest::UnlockNoAns),
            hm.prop_map(SmemRequest::Free),
            any::<[u32; 3]>().prop_map(|w| SmemRequest::Resize(SmemResize {
                res_handle: U32::new(w[0]),
                res_mem: U32::new(w[1]),
                res_new_size: U32::new(w[2]),
            })),
            Just(SmemRequest::WalkAlloc),
            any::<[u32; 2]>().prop_map(|w| SmemRequest::ActionClean(SmemActionClean {
                res_action: U32::new(w[0]),
                action_trans_id: U32::new(w[1]),
            })),
            (any::<[u32; 5]>(), arb_name()).prop_map(|(w, name)| SmemRequest::Import(
                SmemImportMsg {
                    alloc_type: U32::new(w[0]),
                    addr: U32::new(w[1]),
                    size: U32::new(w[2]),
                    kernel_id: U32::new(w[3]),
                    allocator: U32::new(w[4]),
                    name
                }
            )),
            any::<u32>().prop_map(|v| SmemRequest::ClientVersion(SmemVersion {
                version: U32::new(v)
            })),
            any::<[u32; 3]>().prop_map(|w| SmemRequest::VcMemRequestReply(
                SmemVcMemRequestResult {
                    trans_id: U32::new(w[0]),
                    addr: U32::new(w[1]),
                    kernel_id: U32::new(w[2]),
                }
            )),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trips(req in arb_request(), tid in 0u32..0x8000_0000) {
            let mut buf = [0u8; MAX_REQUEST_LEN];
            let n = req.encode(tid, &mut buf);
            let (t, back) = SmemRequest::parse(&buf[..n]).unwrap();
            prop_assert_eq!(t, tid);
            prop_assert_eq!(back, req);
            // Every strict prefix that cuts the body is rejected, never misparsed.
            for cut in 0..n {
                prop_assert!(SmemRequest::parse(&buf[..cut]).is_err() || req == SmemRequest::WalkAlloc);
            }
        }

        #[test]
        fn reply_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = SmemReply::parse(&bytes);
            let _ = SmemRequest::parse(&bytes);
            let _ = parse_reply::<SmemAllocResult>(&bytes);
            let _ = parse_reply::<SmemLockResult>(&bytes);
            let _ = parse_reply::<SmemImportResult>(&bytes);
            let _ = parse_result(&bytes);
        }

        #[test]
        fn released_round_trips(addr: u32, size: u32, kid: u32, h: u32) {
            let r = SmemReleased {
                cmd: U32::new(VC_INITIATED | SmemMsgType::Released as u32),
                addr: U32::new(addr), size: U32::new(size), kernel_id: U32::new(kid), vc_handle: U32::new(h),
            };
            prop_assert_eq!(SmemReply::parse(r.as_bytes()), Ok(SmemReply::Released(r)));
            prop_assert_eq!(SmemReply::parse(&r.as_bytes()[..19]), Err(ProtocolError::Truncated));
        }
    }

    #[test]
    fn alloc_request_bytes_match_vc_sm_defs() {
        let req = SmemRequest::Alloc(SmemAlloc {
            alloc_type: U32::new(SmemAllocType::NonCached as u32),
            base_unit: U32::new(4096),
            num_unit: U32::new(3),
            alignment: U32::new(64),
            allocator: U32::new(0x1234),
            name: name_field(b"cam"),
        });
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = req.encode(7, &mut buf);
        assert_eq!(n, 60);
        assert_eq!(&buf[0..4], &0u32.to_le_bytes()); // type ALLOC
        assert_eq!(&buf[4..8], &7u32.to_le_bytes()); // trans_id
        assert_eq!(&buf[8..12], &1u32.to_le_bytes()); // NON_CACHED
        assert_eq!(&buf[12..16], &4096u32.to_le_bytes());
        assert_eq!(&buf[16..20], &3u32.to_le_bytes());
        assert_eq!(&buf[20..24], &64u32.to_le_bytes());
        assert_eq!(&buf[24..28], &0x1234u32.to_le_bytes());
        assert_eq!(&buf[28..32], b"cam\0");
    }

    #[test]
    fn generic_failure_is_recognised_for_every_reply_type() {
        let fail = SmemResult {
            trans_id: U32::new(3),
            success: I32::new(-22),
        };
        assert_eq!(
            parse_reply::<SmemAllocResult>(fail.as_bytes()),
            Ok(ReplyBody::Failed(-22))
        );
        assert_eq!(
            parse_reply::<SmemImportResult>(fail.as_bytes()),
            Ok(ReplyBody::Failed(-22))
        );
        assert_eq!(parse_result(fail.as_bytes()), Ok(ReplyBody::Failed(-22)));
        let odd = SmemResult {
            trans_id: U32::new(3),
            success: I32::new(5),
        };
        assert_eq!(parse_result(odd.as_bytes()), Ok(ReplyBody::Failed(5)));
        let ok = SmemImportResult {
            trans_id: U32::new(3),
            res_handle: U32::new(0x1001),
        };
        assert_eq!(
            parse_reply::<SmemImportResult>(ok.as_bytes()),
            Ok(ReplyBody::Ok(ok))
        );
        // A 12-byte reply to ALLOC is truncated, not a status.
        assert_eq!(
            parse_reply::<SmemAllocResult>(&[0u8; 12]),
            Err(ProtocolError::Truncated)
        );
    }

    #[test]
    fn vc_to_host_types_are_rejected_host_to_vc() {
        let mut m = [0u8; 28];
        m[0..4].copy_from_slice(&(SmemMsgType::Released as u32).to_le_bytes());
        assert_eq!(
            SmemRequest::parse(&m),
            Err(ProtocolError::UnexpectedMessage)
        );
        m[0..4].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(SmemRequest::parse(&m), Err(ProtocolError::BadHeader));
        let mut r = [0u8; 20];
        r[0..4].copy_from_slice(&(VC_INITIATED | 4).to_le_bytes());
        assert_eq!(SmemReply::parse(&r), Err(ProtocolError::BadHeader));
    }

    #[test]
    fn names_are_terminated_and_bounded() {
        let f = name_field(&[b'x'; 40]);
        assert_eq!(f[31], 0);
        assert_eq!(name_str(&f).len(), 31);
        assert_eq!(name_str(&[b'y'; NAME_LEN]).len(), 32);
    }
}
