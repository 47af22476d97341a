//! [`Smem`]: the typed ARM-side client of the VideoCore `'SMEM'` service (vc-sm-cma).
//!
//! Requests are encoded into a stack buffer and sent as one DATA message; the client then reads
//! messages until the reply with the same `trans_id` arrives. On the way it handles VC-initiated
//! messages: RELEASED (the VideoCore dropped an import; the host may now unpin it) and
//! VC_MEM_REQUEST (refused: this client lends no host memory to the VideoCore). Replies with another
//! `trans_id` (late answers to abandoned requests) are counted and dropped.
//!
//! Handles are move-only: [`Smem::free`] consumes its [`SmemHandle`], so a double free cannot be
//! written in safe client code (the VideoCore still detects one from a raw handle, see
//! [`Smem::free_raw`]). Import ids sent to the VideoCore (`kernel_id`) are indices into a
//! generation-checked table, never addresses (docs/protocols/vchiq.md §9 item 12).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use log::warn;
use zerocopy::little_endian::U32;

use fwipc_transport_api::ProtocolError;

use super::error::{SmemStatus, VchiError};
use super::link::ServiceLink;
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
    handle: u32,
    addr: u32,
    size: u32,
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

/// A host buffer imported into the VideoCore. Move-only; give it back with
/// [`Smem::free_import`]. The host memory must stay pinned until the matching
/// [`Released`] event arrives.
#[derive(Debug, PartialEq, Eq)]
pub struct SmemImport {
    handle: u32,
    kernel_id: u32,
    addr: u32,
    size: u32,
}

impl SmemImport {
    /// The VideoCore handle.
    pub fn raw(&self) -> u32 {
        self.handle
    }
    /// The id the VideoCore reports back in RELEASED.
    pub fn kernel_id(&self) -> u32 {
        self.kernel_id
    }
    /// The imported bus address.
    pub fn bus_addr(&self) -> u32 {
        self.addr
    }
    /// Size in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }
}

/// The VideoCore dropped an import: the host memory at `addr..addr+size` may be unpinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Our id of the import.
    pub kernel_id: u32,
    /// Bus address.
    pub addr: u32,
    /// Size.
    pub size: u32,
    /// The VideoCore handle it had.
    pub vc_handle: u32,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImportState {
    Live,
    /// FREE sent and acknowledged; waiting for the VideoCore's RELEASED.
    AwaitingRelease,
    /// Host memory lent on the VideoCore's VC_MEM_REQUEST; RELEASED gives it back.
    Lent,
}

/// Host memory the client lends to the VideoCore when it asks (VC_MEM_REQUEST, protocol
/// version 2). The client keeps the ids; the lender only hands out and takes back bus ranges.
pub trait HostMemory {
    /// Lend `size` bytes aligned to `align` (0 = any): their bus address, or `None` to refuse.
    fn lend(&mut self, size: u32, align: u32) -> Option<u32>;
    /// The VideoCore released `addr..addr+size`.
    fn reclaim(&mut self, addr: u32, size: u32);
}

/// Lends nothing: every VC_MEM_REQUEST is answered with address 0 (refused).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLending;

impl HostMemory for NoLending {
    fn lend(&mut self, _size: u32, _align: u32) -> Option<u32> {
        None
    }
    fn reclaim(&mut self, _addr: u32, _size: u32) {}
}

#[derive(Debug, Clone, Copy)]
struct ImportEntry {
    generation: u16,
    state: Option<(ImportState, u32, u32)>, // (state, addr, size)
}

/// The `'SMEM'` client over one open service.
pub struct Smem<L: ServiceLink, M: HostMemory = NoLending> {
    link: L,
    next_trans: u32,
    version_acked: bool,
    imports: Vec<ImportEntry>,
    released: VecDeque<Released>,
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
            imports: alloc::vec![
                ImportEntry {
                    generation: 0,
                    state: None
                };
                usize::from(max_imports)
            ],
            released: VecDeque::with_capacity(usize::from(max_imports)),
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
                Ok(SmemReply::Released(r)) => self.on_released(Released {
                    kernel_id: r.kernel_id.get(),
                    addr: r.addr.get(),
                    size: r.size.get(),
                    vc_handle: r.vc_handle.get(),
                }),
                Ok(SmemReply::VcMemRequest(r)) => self.on_vc_mem_request(r)?,
                Err(p) => {
                    self.stats.malformed += 1;
                    warn!(target: "vchi::smem", "dropped malformed message: {p}");
                }
            }
        }
        Err(VchiError::Protocol(ProtocolError::UnexpectedMessage))
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
                Ok(SmemReply::Released(r)) => self.on_released(Released {
                    kernel_id: r.kernel_id.get(),
                    addr: r.addr.get(),
                    size: r.size.get(),
                    vc_handle: r.vc_handle.get(),
                }),
                Ok(SmemReply::VcMemRequest(r)) => self.on_vc_mem_request(r)?,
                Err(_) => self.stats.malformed += 1,
            }
        }
        Ok(n)
    }

    fn on_vc_mem_request(&mut self, r: SmemVcMemRequest) -> Result<(), VchiError> {
        let (size, align) = (r.size.get(), r.align.get());
        let slot = self.imports.iter().position(|e| e.state.is_none());
        let lent = match slot {
            Some(idx) if size > 0 => self.lender.lend(size, align).map(|addr| (idx, addr)),
            _ => None,
        };
        let (addr, kernel_id) = match lent {
            Some((idx, addr)) if addr != 0 && addr.checked_add(size - 1).is_some() => {
                let e = &mut self.imports[idx];
                e.generation = e.generation.wrapping_add(1).max(1);
                e.state = Some((ImportState::Lent, addr, size));
                self.stats.vc_mem_requests_lent += 1;
                (addr, (u32::from(e.generation) << 16) | (idx as u32 + 1))
            }
            Some((_, addr)) => {
                // The lender returned a range that cannot exist on the 32-bit bus: give it back.
                self.lender.reclaim(addr, size);
                self.stats.vc_mem_requests_refused += 1;
                (0, 0)
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
        let idx = (r.kernel_id & 0xFFFF) as usize;
        let generation = (r.kernel_id >> 16) as u16;
        match self.imports.get_mut(idx.wrapping_sub(1)) {
            Some(e) if e.generation == generation && e.state.is_some() => {
                let (st, addr, size) = e.state.unwrap_or((ImportState::Live, 0, 0));
                if st == ImportState::Live {
                    // The VideoCore may drop an import on its own; the host handle is still ours
                    // to FREE, which will then be refused as stale. Record it anyway.
                    warn!(target: "vchi::smem", "RELEASED for a live import {:#x}", r.kernel_id);
                }
                if (addr, size) != (r.addr, r.size) {
                    self.stats.bogus_releases += 1;
                    return;
                }
                e.state = None;
                if st == ImportState::Lent {
                    self.lender.reclaim(addr, size);
                }
                if self.released.len() == self.released.capacity() {
                    self.released.pop_front();
                }
                self.released.push_back(r);
            }
            _ => {
                self.stats.bogus_releases += 1;
                warn!(target: "vchi::smem", "RELEASED for unknown kernel_id {:#x}", r.kernel_id);
            }
        }
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
        let idx = self
            .imports
            .iter()
            .position(|e| e.state.is_none())
            .ok_or(VchiError::TableFull)?;
        let e = &mut self.imports[idx];
        e.generation = e.generation.wrapping_add(1).max(1);
        let kernel_id = (u32::from(e.generation) << 16) | (idx as u32 + 1);
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
                self.imports[idx].state = Some((ImportState::Live, addr, size));
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
        let idx = (i.kernel_id & 0xFFFF) as usize - 1;
        self.simple(SmemRequest::Free(SmemHandleMsg {
            res_handle: U32::new(i.handle),
            res_mem: U32::new(0),
        }))?;
        if let Some(e) = self.imports.get_mut(idx) {
            if self.version_acked {
                if let Some(st) = e.state.as_mut() {
                    st.0 = ImportState::AwaitingRelease;
                }
            } else {
                e.state = None;
            }
        }
        Ok(())
    }

    /// Imports freed by the host but not yet released by the VideoCore.
    pub fn pending_releases(&self) -> usize {
        self.imports
            .iter()
            .filter(|e| matches!(e.state, Some((ImportState::AwaitingRelease, _, _))))
            .count()
    }

    /// Host blocks currently lent to the VideoCore.
    pub fn lent_blocks(&self) -> usize {
        self.imports
            .iter()
            .filter(|e| matches!(e.state, Some((ImportState::Lent, _, _))))
            .count()
    }

    /// The lender.
    pub fn lender(&self) -> &M {
        &self.lender
    }

    /// The next RELEASED event, oldest first.
    pub fn take_released(&mut self) -> Option<Released> {
        self.released.pop_front()
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
mod tests {
    use super::*;
    use crate::sim::vchi::loopback::Loopback;
    use crate::sim::vchi::smem_server::SmemServer;

    fn client() -> Smem<Loopback<SmemServer>> {
        let l = Loopback::open(SmemServer::new(0x4000_0000, 1 << 20), 99);
        Smem::connect(l, 4).unwrap()
    }

    #[test]
    fn alloc_lock_write_free_and_double_free() {
        let mut c = client();
        assert!(c.releases_supported());
        let h = c.alloc(10_000, SmemAllocType::Cached, 0, b"frame").unwrap();
        assert_eq!(h.bus_addr() % 4096, 0);
        let addr = c.lock(&h).unwrap();
        assert_eq!(addr, h.bus_addr());
        // The VideoCore really holds those bytes: write through its side, read them back.
        let vc = c.link_mut().server_mut();
        vc.block_bytes_mut(addr, 10_000).unwrap().fill(0x42);
        assert_eq!(vc.blocks().next().unwrap().locks, 1);
        assert_eq!(
            c.free_raw(h.raw(), h.bus_addr()),
            Err(VchiError::Smem(SmemStatus::Locked))
        );
        c.unlock(&h).unwrap();
        assert_eq!(c.unlock(&h), Err(VchiError::Smem(SmemStatus::NotLocked)));
        let (raw, mem) = (h.raw(), h.bus_addr());
        c.free(h).unwrap();
        assert!(c.link_mut().server().block_bytes(addr, 1).is_err());
        assert_eq!(
            c.free_raw(raw, mem),
            Err(VchiError::Smem(SmemStatus::StaleHandle))
        );
        assert_eq!(
            c.free_raw(0x7777_7001, 0),
            Err(VchiError::Smem(SmemStatus::UnknownHandle))
        );
        let e: fwipc_transport_api::Error = VchiError::Smem(SmemStatus::StaleHandle).into();
        assert_eq!(e, fwipc_transport_api::Error::InvalidArgument);
    }

    #[test]
    fn exhaustion_and_bad_arguments_are_typed() {
        let mut c = client();
        assert_eq!(
            c.alloc(2 << 20, SmemAllocType::Cached, 0, b"big"),
            Err(VchiError::Smem(SmemStatus::NoSpace))
        );
        assert_eq!(
            c.alloc(0, SmemAllocType::Cached, 0, b""),
            Err(VchiError::InvalidArgument)
        );
        assert_eq!(
            c.alloc(16, SmemAllocType::Cached, 3, b""),
            Err(VchiError::InvalidArgument)
        );
    }

    #[test]
    fn import_free_then_released_with_our_kernel_id() {
        let mut c = client();
        let i = c.import(0xC010_0000, 8192, b"dmabuf").unwrap();
        let kid = i.kernel_id();
        assert_eq!(c.link_mut().server().stats().live_imports, 1);
        c.free_import(i).unwrap();
        // The RELEASED came after the FREE reply; it is picked up by the next call.
        assert_eq!(c.pending_releases(), 1);
        let h = c.alloc(64, SmemAllocType::NonCached, 64, b"x").unwrap();
        let r = c.take_released().unwrap();
        assert_eq!((r.kernel_id, r.addr, r.size), (kid, 0xC010_0000, 8192));
        assert_eq!(c.pending_releases(), 0);
        assert!(c.take_released().is_none());
        c.free(h).unwrap();
        // The table is bounded: 4 live imports, the fifth is refused locally.
        let v: Vec<_> = (0..4)
            .map(|k| c.import(0xC000_0000 + k * 4096, 4096, b"i").unwrap())
            .collect();
        assert_eq!(c.import(0xC100_0000, 4096, b"i"), Err(VchiError::TableFull));
        for i in v {
            c.free_import(i).unwrap();
        }
        assert_eq!(c.import(0, 4096, b""), Err(VchiError::InvalidArgument));
    }

    /// A bump lender over a host window, recording what comes back.
    #[derive(Default)]
    struct Bump {
        next: u32,
        end: u32,
        reclaimed: Vec<(u32, u32)>,
    }

    impl HostMemory for Bump {
        fn lend(&mut self, size: u32, align: u32) -> Option<u32> {
            let a = align.max(1);
            let start = self.next.div_ceil(a) * a;
            let end = start.checked_add(size)?;
            (end <= self.end).then(|| {
                self.next = end;
                start
            })
        }
        fn reclaim(&mut self, addr: u32, size: u32) {
            self.reclaimed.push((addr, size));
        }
    }

    #[test]
    fn vc_mem_request_lent_then_released() {
        let l = Loopback::open(SmemServer::new(0x4000_0000, 1 << 20), 99);
        let lender = Bump {
            next: 0xC800_0000,
            end: 0xC800_0000 + (1 << 20),
            ..Bump::default()
        };
        let mut c = Smem::connect_with(l, 4, lender).unwrap();
        // Nothing pending: polling is a no-op.
        assert_eq!(c.poll_events(), Ok(0));
        c.link_mut()
            .vc_act(|s, out| out.push(s.request_host_memory(8192, 4096, b"codec").unwrap()));
        assert_eq!(c.poll_events(), Ok(1));
        assert_eq!(c.lent_blocks(), 1);
        let lent: Vec<_> = c.link_mut().server().lent().collect();
        assert_eq!(lent.len(), 1);
        assert_eq!((lent[0].addr, lent[0].size), (0xC800_0000, 8192));
        let kid = lent[0].kernel_id;
        assert!(kid != 0);
        // Lent memory is the VideoCore's to release, not the host's to free.
        assert_eq!(
            c.free_raw(lent[0].vc_handle, 0),
            Err(VchiError::Smem(SmemStatus::InvalidArgument))
        );
        let h = lent[0].vc_handle;
        c.link_mut()
            .vc_act(|s, out| out.push(s.release_host_memory(h).unwrap()));
        assert_eq!(c.poll_events(), Ok(1));
        assert_eq!(c.lent_blocks(), 0);
        assert_eq!(c.lender().reclaimed, [(0xC800_0000, 8192)]);
        assert_eq!(c.take_released().map(|r| r.kernel_id), Some(kid));
        // A second release of the same handle is refused on the VideoCore side.
        assert_eq!(
            c.link_mut().server_mut().release_host_memory(h),
            Err(SmemStatus::StaleHandle)
        );
    }

    #[test]
    fn vc_mem_request_refused_without_a_lender_or_space() {
        let mut c = client();
        c.link_mut()
            .vc_act(|s, out| out.push(s.request_host_memory(4096, 0, b"x").unwrap()));
        assert_eq!(c.poll_events(), Ok(1));
        assert_eq!(c.stats().vc_mem_requests_refused, 1);
        assert_eq!(c.link_mut().server().stats().host_refusals, 1);
        assert_eq!(c.link_mut().server().lent().count(), 0);
        // Before CLIENT_VERSION 2 the VideoCore must not ask at all.
        let mut s = SmemServer::new(0, 4096);
        assert_eq!(
            s.request_host_memory(1, 0, b""),
            Err(SmemStatus::NotSupported)
        );
    }

    #[test]
    fn bogus_released_and_stray_replies_are_counted_not_trusted() {
        use super::super::smem_wire::{SmemMsgType, SmemReleased, VC_INITIATED};
        use zerocopy::IntoBytes;
        struct Hostile(SmemServer, u32);
        impl super::super::link::VcService for Hostile {
            fn fourcc(&self) -> u32 {
                0
            }
            fn on_message(&mut self, m: &[u8], out: &mut Vec<super::super::link::VcAction>) {
                use super::super::link::VcAction::Reply;
                self.1 += 1;
                // Before every real reply: a forged RELEASED, a stray reply and garbage.
                let forged = SmemReleased {
                    cmd: U32::new(VC_INITIATED | SmemMsgType::Released as u32),
                    addr: U32::new(1),
                    size: U32::new(1),
                    kernel_id: U32::new(0x0001_0001),
                    vc_handle: U32::new(5),
                };
                out.push(Reply(forged.as_bytes().to_vec()));
                out.push(Reply(0x7000_0000u32.to_le_bytes().repeat(2)));
                out.push(Reply(alloc::vec![0xFF; 3]));
                self.0.on_message(m, out);
            }
        }
        let l = Loopback::open(Hostile(SmemServer::new(0x1000, 1 << 16), 0), 1);
        let mut c = Smem::connect(l, 2).unwrap();
        let h = c.alloc(100, SmemAllocType::Cached, 0, b"").unwrap();
        c.free(h).unwrap();
        let st = c.stats();
        assert_eq!(st.bogus_releases, 3);
        assert_eq!(st.stray_replies, 3);
        assert_eq!(st.malformed, 3);
        assert!(c.take_released().is_none());
    }

    mod hostile {
        use super::super::super::link::{VcAction, VcService};
        use super::*;
        use proptest::prelude::*;

        /// A VideoCore that, while `junk` is non-empty, sends one junk message before each reply.
        struct Junk(SmemServer, Vec<Vec<u8>>);
        impl VcService for Junk {
            fn fourcc(&self) -> u32 {
                0
            }
            fn on_message(&mut self, m: &[u8], out: &mut Vec<VcAction>) {
                if let Some(j) = self.1.pop() {
                    out.push(VcAction::Reply(j));
                }
                self.0.on_message(m, out);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]
            /// Random junk interleaved with real replies: the client never panics, every call
            /// ends in a value or a typed error, and once the junk stops it works normally.
            #[test]
            fn junk_from_the_videocore_is_survived(
                junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..12),
                sizes in proptest::collection::vec(1u32..5000, 1..8),
            ) {
                let l = Loopback::open(Junk(SmemServer::new(0x1000, 1 << 16), junk), 1);
                let Ok(mut c) = Smem::connect(l, 2) else { return Ok(()) };
                let mut live = Vec::new();
                for sz in sizes {
                    if let Ok(h) = c.alloc(sz, SmemAllocType::Cached, 0, b"p") {
                        live.push(h);
                    }
                }
                for h in live {
                    let _ = c.free(h);
                }
                c.link_mut().server_mut().1.clear();
                let h = c.alloc(100, SmemAllocType::Cached, 0, b"ok");
                prop_assert!(h.is_ok(), "{:?}", h);
                prop_assert!(c.free(h.unwrap()).is_ok());
            }
        }
    }
}
