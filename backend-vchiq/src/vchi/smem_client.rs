//! [`Smem`]: the typed ARM-side client of the VideoCore `'SMEM'` service (vc-sm-cma).
//!
//! Requests are encoded into a stack buffer and sent as one DATA message; the client then reads
//! messages until the reply with the same `trans_id` arrives. On the way it handles VC-initiated
//! messages: RELEASED (the VideoCore dropped an import; the host may now unpin it) and
//! VC_MEM_REQUEST (refused: this client lends no host memory to the VideoCore). Replies with another
//! `trans_id` (late answers to abandoned requests) are counted and dropped.
//!
//! Every exchange with the VideoCore is here; the table of host memory the VideoCore holds
//! (imports, blocks lent on VC_MEM_REQUEST, RELEASED events not yet taken) is `smem_imports`.
//!
//! Handles are move-only: [`Smem::free`] consumes its [`SmemHandle`], so a double free cannot be
//! written in safe client code (the VideoCore still detects one from a raw handle, see
//! [`Smem::free_raw`]). Import ids sent to the VideoCore (`kernel_id`) are indices into a
//! generation-checked table, never addresses (docs/protocols/vchiq.md §9 item 12).

use log::warn;
use zerocopy::little_endian::U32;

use fwipc_transport_api::ProtocolError;

use super::error::{SmemStatus, VchiError};
use super::link::ServiceLink;
use super::smem_imports::ImportTable;
pub use super::smem_imports::{HostMemory, NoLending, Released, SmemImport};
use super::smem_wire::{
    name_field, parse_reply, parse_result, ReplyBody, SmemAlloc, SmemAllocResult, SmemAllocType,
    SmemHandleMsg, SmemImportMsg, SmemImportResult, SmemLockResult, SmemReply, SmemRequest,
    SmemVcMemRequest, SmemVcMemRequestResult, SmemVersion, CLIENT_PROTOCOL_VERSION, MAX_REPLY_LEN,
    MAX_REQUEST_LEN,
};

/// How many unrelated messages one request may see before its reply, before we call the peer
/// broken (bounds the work a hostile peer can make one call do).
const MAX_STRAY_PER_CALL: usize = 64;

/// A live VideoCore allocation. Move-only; give it back with [`Smem::free`].
#[derive(Debug, PartialEq, Eq)]
pub struct SmemHandle {
    pub(super) handle: u32,
    pub(super) addr: u32,
    pub(super) size: u32,
}

impl SmemHandle {
    /// The VideoCore handle (MEM_HANDLE).
    pub fn raw(&self) -> u32 {
        self.handle
    }
    /// VideoCore bus address of the block at allocation time.
    pub fn bus_addr(&self) -> u32 {
        self.addr
    }
    /// Size in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }
}

/// Client counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmemClientStats {
    /// Replies whose trans_id matched no request in flight (dropped).
    pub stray_replies: u64,
    /// VC→host messages that failed to parse (dropped).
    pub malformed: u64,
    /// RELEASED events for an unknown or not-freed kernel_id (dropped).
    pub bogus_releases: u64,
    /// VC_MEM_REQUESTs refused.
    pub vc_mem_requests_refused: u64,
    /// VC_MEM_REQUESTs answered with lent host memory.
    pub vc_mem_requests_lent: u64,
}

/// The `'SMEM'` client over one open service.
pub struct Smem<L: ServiceLink, M: HostMemory = NoLending> {
    link: L,
    next_trans: u32,
    version_acked: bool,
    imports: ImportTable,
    stats: SmemClientStats,
    lender: M,
}

impl<L: ServiceLink> Smem<L> {
    /// [`Smem::connect_with`] lending no host memory.
    pub fn connect(link: L, max_imports: u16) -> Result<Self, VchiError> {
        Self::connect_with(link, max_imports, NoLending)
    }
}

impl<L: ServiceLink, M: HostMemory> Smem<L, M> {
    /// Wrap an open `'SMEM'` service and announce protocol version 2 (RELEASED and
    /// VC_MEM_REQUEST support; `lender` answers the latter). Up to `max_imports` imports and lent
    /// blocks may be live (or awaiting release) at once; all tables are allocated here, none on
    /// the request paths.
    pub fn connect_with(link: L, max_imports: u16, lender: M) -> Result<Self, VchiError> {
        let mut s = Smem {
            lender,
            link,
            next_trans: 1,
            version_acked: false,
            imports: ImportTable::new(max_imports),
            stats: SmemClientStats::default(),
        };
        let req = SmemRequest::ClientVersion(SmemVersion {
            version: U32::new(CLIENT_PROTOCOL_VERSION),
        });
        let mut buf = [0u8; MAX_REPLY_LEN];
        let n = s.transact(req, &mut buf)?;
        match parse_result(&buf[..n])? {
            ReplyBody::Ok(_) => s.version_acked = true,
            // Old firmware: no RELEASED callbacks; imports are gone once FREE is acknowledged.
            ReplyBody::Failed(c) => warn!(target: "vchi::smem", "CLIENT_VERSION refused ({c})"),
        }
        Ok(s)
    }

    /// Counters.
    pub fn stats(&self) -> SmemClientStats {
        self.stats
    }

    /// Whether the VideoCore accepted protocol version 2 (it will send RELEASED).
    pub fn releases_supported(&self) -> bool {
        self.version_acked
    }

    /// The underlying service.
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// Give back the service.
    pub fn into_link(self) -> L {
        self.link
    }

    fn next_trans_id(&mut self) -> u32 {
        let t = self.next_trans;
        // The host's trans_id never has bit 31 set (that marks VC-initiated messages).
        self.next_trans = (self.next_trans + 1) & 0x7FFF_FFFF;
        t
    }

    /// Send one request and read until its reply; returns the reply length in `reply`.
    fn transact(
        &mut self,
        req: SmemRequest,
        reply: &mut [u8; MAX_REPLY_LEN],
    ) -> Result<usize, VchiError> {
        let tid = self.next_trans_id();
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = req.encode(tid, &mut buf);
        self.link.send(&buf[..n])?;
        for _ in 0..MAX_STRAY_PER_CALL {
            let len = match self.link.recv(reply) {
                Ok(l) => l,
                Err(VchiError::Protocol(p)) => {
                    self.stats.malformed += 1;
                    warn!(target: "vchi::smem", "dropped malformed message: {p}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            match SmemReply::parse(&reply[..len]) {
                Ok(SmemReply::Reply { trans_id, .. }) if trans_id == tid => return Ok(len),
                Ok(SmemReply::Reply { trans_id, .. }) => {
                    self.stats.stray_replies += 1;
                    warn!(target: "vchi::smem", "stray reply {trans_id:#x} while waiting for {tid:#x}");
                }
                Ok(SmemReply::Released(r)) => self.on_released(Released::from_wire(&r)),
                Ok(SmemReply::VcMemRequest(r)) => self.on_vc_mem_request(r)?,
                Err(p) => {
                    self.stats.malformed += 1;
                    warn!(target: "vchi::smem", "dropped malformed message: {p}");
                }
            }
        }
        Err(VchiError::Protocol(ProtocolError::UnexpectedMessage))
    }

    fn status(c: i32) -> VchiError {
        VchiError::Smem(SmemStatus::from_code(c))
    }

    /// Allocate `size` bytes of VideoCore memory aligned to `align` (0 = one page).
    pub fn alloc(
        &mut self,
        size: u32,
        kind: SmemAllocType,
        align: u32,
        name: &[u8],
    ) -> Result<SmemHandle, VchiError> {
        if size == 0 || (align != 0 && !align.is_power_of_two()) {
            return Err(VchiError::InvalidArgument);
        }
        let req = SmemRequest::Alloc(SmemAlloc {
            alloc_type: U32::new(kind as u32),
            base_unit: U32::new(size),
            num_unit: U32::new(1),
            alignment: U32::new(align),
            allocator: U32::new(0),
            name: name_field(name),
        });
        let mut buf = [0u8; MAX_REPLY_LEN];
        let n = self.transact(req, &mut buf)?;
        match parse_reply::<SmemAllocResult>(&buf[..n])? {
            ReplyBody::Failed(c) => Err(Self::status(c)),
            ReplyBody::Ok(r) if r.res_handle.get() == 0 || r.res_mem.get() == 0 => {
                Err(VchiError::Smem(SmemStatus::Refused))
            }
            ReplyBody::Ok(r) => {
                let got = u64::from(r.res_base_size.get()) * u64::from(r.res_num.get());
                if got < u64::from(size) {
                    return Err(VchiError::Protocol(ProtocolError::BadLength));
                }
                if align != 0 && r.res_mem.get() % align != 0 {
                    return Err(VchiError::Protocol(ProtocolError::OutOfRange));
                }
                Ok(SmemHandle {
                    handle: r.res_handle.get(),
                    addr: r.res_mem.get(),
                    size,
                })
            }
        }
    }

    /// Lock (pin) a block; returns its current bus address.
    pub fn lock(&mut self, h: &SmemHandle) -> Result<u32, VchiError> {
        let req = SmemRequest::Lock(SmemHandleMsg {
            res_handle: U32::new(h.handle),
            res_mem: U32::new(h.addr),
        });
        let mut buf = [0u8; MAX_REPLY_LEN];
        let n = self.transact(req, &mut buf)?;
        match parse_reply::<SmemLockResult>(&buf[..n])? {
            ReplyBody::Failed(c) => Err(Self::status(c)),
            ReplyBody::Ok(r) if r.res_handle.get() != h.handle => {
                Err(VchiError::Protocol(ProtocolError::UnknownToken))
            }
            ReplyBody::Ok(r) if r.res_mem.get() == 0 => Err(VchiError::Smem(SmemStatus::Refused)),
            ReplyBody::Ok(r) => Ok(r.res_mem.get()),
        }
    }

    /// Unlock a block.
    pub fn unlock(&mut self, h: &SmemHandle) -> Result<(), VchiError> {
        self.simple(SmemRequest::Unlock(SmemHandleMsg {
            res_handle: U32::new(h.handle),
            res_mem: U32::new(h.addr),
        }))
    }

    /// Free a block. On error the handle is returned by neither side: a refused FREE (e.g. the
    /// block is locked) leaves it allocated on the VideoCore, and the caller may retry with
    /// [`Self::free_raw`] after unlocking.
    pub fn free(&mut self, h: SmemHandle) -> Result<(), VchiError> {
        self.free_raw(h.handle, h.addr)
    }

    /// Free by raw handle (a test and recovery hook: this is how a buggy or hostile client would
    /// double free; the VideoCore must refuse it).
    pub fn free_raw(&mut self, handle: u32, res_mem: u32) -> Result<(), VchiError> {
        self.simple(SmemRequest::Free(SmemHandleMsg {
            res_handle: U32::new(handle),
            res_mem: U32::new(res_mem),
        }))
    }

    fn simple(&mut self, req: SmemRequest) -> Result<(), VchiError> {
        let mut buf = [0u8; MAX_REPLY_LEN];
        let n = self.transact(req, &mut buf)?;
        match parse_result(&buf[..n])? {
            ReplyBody::Failed(c) => Err(Self::status(c)),
            ReplyBody::Ok(_) => Ok(()),
        }
    }

    /// Import host memory at bus address `addr` (`size` bytes) into the VideoCore.
    pub fn import(&mut self, addr: u32, size: u32, name: &[u8]) -> Result<SmemImport, VchiError> {
        if size == 0 || addr == 0 || addr.checked_add(size - 1).is_none() {
            return Err(VchiError::InvalidArgument);
        }
        let (idx, kernel_id) = self.imports.reserve().ok_or(VchiError::TableFull)?;
        let req = SmemRequest::Import(SmemImportMsg {
            alloc_type: U32::new(SmemAllocType::NonCached as u32),
            addr: U32::new(addr),
            size: U32::new(size),
            kernel_id: U32::new(kernel_id),
            allocator: U32::new(0),
            name: name_field(name),
        });
        let mut buf = [0u8; MAX_REPLY_LEN];
        let n = self.transact(req, &mut buf)?;
        match parse_reply::<SmemImportResult>(&buf[..n])? {
            ReplyBody::Failed(c) => Err(Self::status(c)),
            ReplyBody::Ok(r) if r.res_handle.get() == 0 => {
                Err(VchiError::Smem(SmemStatus::Refused))
            }
            ReplyBody::Ok(r) => {
                self.imports.set_live(idx, addr, size);
                Ok(SmemImport {
                    handle: r.res_handle.get(),
                    kernel_id,
                    addr,
                    size,
                })
            }
        }
    }

    /// Free an import. With protocol version 2 the host memory stays pinned until the
    /// [`Released`] event for it ([`Self::take_released`]).
    pub fn free_import(&mut self, i: SmemImport) -> Result<(), VchiError> {
        self.simple(SmemRequest::Free(SmemHandleMsg {
            res_handle: U32::new(i.handle),
            res_mem: U32::new(0),
        }))?;
        self.imports.freed(i.kernel_id, self.version_acked);
        Ok(())
    }

    /// Handle VC-initiated messages that arrived while no request is outstanding (RELEASED,
    /// VC_MEM_REQUEST); never blocks. Returns how many were handled.
    pub fn poll_events(&mut self) -> Result<usize, VchiError> {
        let mut n = 0;
        let mut buf = [0u8; MAX_REPLY_LEN];
        for _ in 0..MAX_STRAY_PER_CALL {
            let len = match self.link.try_recv(&mut buf) {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(VchiError::Protocol(_)) => {
                    self.stats.malformed += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            n += 1;
            match SmemReply::parse(&buf[..len]) {
                Ok(SmemReply::Reply { .. }) => self.stats.stray_replies += 1,
                Ok(SmemReply::Released(r)) => self.on_released(Released::from_wire(&r)),
                Ok(SmemReply::VcMemRequest(r)) => self.on_vc_mem_request(r)?,
                Err(_) => self.stats.malformed += 1,
            }
        }
        Ok(n)
    }

    fn on_vc_mem_request(&mut self, r: SmemVcMemRequest) -> Result<(), VchiError> {
        let lent = self
            .imports
            .lend(&mut self.lender, r.size.get(), r.align.get());
        let (addr, kernel_id) = match lent {
            Some(v) => {
                self.stats.vc_mem_requests_lent += 1;
                v
            }
            None => {
                self.stats.vc_mem_requests_refused += 1;
                (0, 0)
            }
        };
        let answer = SmemRequest::VcMemRequestReply(SmemVcMemRequestResult {
            trans_id: r.trans_id,
            addr: U32::new(addr),
            kernel_id: U32::new(kernel_id),
        });
        let mut b = [0u8; MAX_REQUEST_LEN];
        let t = self.next_trans_id();
        let m = answer.encode(t, &mut b);
        self.link.send(&b[..m])
    }

    fn on_released(&mut self, r: Released) {
        if !self.imports.release(r, &mut self.lender) {
            self.stats.bogus_releases += 1;
        }
    }

    /// Imports freed by the host but not yet released by the VideoCore.
    pub fn pending_releases(&self) -> usize {
        self.imports.pending_releases()
    }

    /// Host blocks currently lent to the VideoCore.
    pub fn lent_blocks(&self) -> usize {
        self.imports.lent_blocks()
    }

    /// The lender.
    pub fn lender(&self) -> &M {
        &self.lender
    }

    /// The next RELEASED event, oldest first.
    pub fn take_released(&mut self) -> Option<Released> {
        self.imports.take_released()
    }
}

/// Parse one VC→host message the way the client does, without a link (fuzz entry).
pub fn parse_vc_message(bytes: &[u8]) -> Result<(), ProtocolError> {
    match SmemReply::parse(bytes)? {
        SmemReply::Reply { bytes, .. } => {
            let _ = parse_reply::<SmemAllocResult>(bytes);
            let _ = parse_reply::<SmemLockResult>(bytes);
            let _ = parse_reply::<SmemImportResult>(bytes);
            let _ = parse_result(bytes);
            Ok(())
        }
        SmemReply::Released(_) | SmemReply::VcMemRequest(_) => Ok(()),
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests;
