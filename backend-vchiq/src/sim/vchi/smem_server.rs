//! The VideoCore side of `'SMEM'`: what our simulated VideoCore runs for the shared-memory
//! client. It owns a real memory area (real bytes, a VideoCore bus base address), allocates blocks
//! from it first-fit with coalescing, and hands out generational handles so a freed or forged
//! handle is told apart from a live one and answered with a typed status, never acted on.
//!
//! Behaviour follows the old vc_sm / vc-sm-cma messages (docs/protocols/vchiq.md §8). Where the
//! real firmware's behaviour is not public it is marked (unverified): the failure encoding (see
//! [`crate::vchi::smem_wire`]), replying to FREE (vc-sm-cma does not wait for one), refusing to free a
//! locked block, and poisoning freed bytes.

use alloc::vec::Vec;

use log::{debug, warn};
use zerocopy::little_endian::{I32, U32};
use zerocopy::IntoBytes;

pub use super::smem_memory::{BlockInfo, POISON};
use super::smem_memory::{Object, SmemHeap, MAX_SLOTS, SLOT_BITS};
use crate::vchi::error::SmemStatus;
use crate::vchi::fourcc;
use crate::vchi::link::{VcAction, VcService};
use crate::vchi::smem_wire::{
    name_field, name_str, SmemAllocResult, SmemHandleMsg, SmemImportResult, SmemLockResult,
    SmemMsgType, SmemReleased, SmemRequest, SmemResult, SmemVcMemRequest, SmemVcMemRequestResult,
    NAME_LEN, VC_INITIATED,
};

/// Default block alignment when the request says 0 (one page).
pub const DEFAULT_ALIGN: u32 = 4096;

/// Counters of the VideoCore-side service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmemServerStats {
    /// Live allocated blocks.
    pub live_blocks: u32,
    /// Live imports.
    pub live_imports: u32,
    /// Requests refused with a status.
    pub refused: u64,
    /// Messages that could not be parsed at all.
    pub malformed: u64,
    /// RELEASED messages sent.
    pub released_sent: u64,
    /// VC_MEM_REQUESTs the host refused (answered with address 0).
    pub host_refusals: u64,
}

/// Host memory lent to the VideoCore ([`SmemServer::lent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LentInfo {
    /// The VideoCore's handle for it.
    pub vc_handle: u32,
    /// Host bus address (0 while the request is unanswered).
    pub addr: u32,
    /// Size.
    pub size: u32,
    /// The host's id for it.
    pub kernel_id: u32,
}

/// The VideoCore-side `'SMEM'` handler.
pub struct SmemServer {
    heap: SmemHeap,
    client_version: u32,
    next_vc_trans: u32,
    stats: SmemServerStats,
}

impl SmemServer {
    /// A VideoCore memory area of `size` bytes at bus address `base` (`base + size` must fit in
    /// 32 bits: every VideoCore address is a 32-bit bus address).
    pub fn new(base: u32, size: u32) -> Self {
        SmemServer {
            heap: SmemHeap::new(base, size),
            client_version: 0,
            next_vc_trans: 1,
            stats: SmemServerStats::default(),
        }
    }

    /// Bus base address of the area.
    pub fn base(&self) -> u32 {
        self.heap.base
    }

    /// Size of the area.
    pub fn size(&self) -> u32 {
        self.heap.mem.len() as u32
    }

    /// Free bytes in the area (sum of free ranges).
    pub fn free_bytes(&self) -> u64 {
        self.heap.free_bytes()
    }

    /// VideoCore-side access to a live block: the bytes at bus address `addr..addr+len`, which must
    /// lie inside one live allocated block.
    pub fn block_bytes(&self, addr: u32, len: u32) -> Result<&[u8], SmemStatus> {
        self.heap.block_bytes(addr, len)
    }

    /// Mutable VideoCore-side access to a live block (see [`Self::block_bytes`]).
    pub fn block_bytes_mut(&mut self, addr: u32, len: u32) -> Result<&mut [u8], SmemStatus> {
        self.heap.block_bytes_mut(addr, len)
    }

    /// The live allocated blocks (WALK_ALLOC's view).
    pub fn blocks(&self) -> impl Iterator<Item = BlockInfo> + '_ {
        self.heap.blocks()
    }

    /// Counters.
    pub fn stats(&self) -> SmemServerStats {
        self.stats
    }

    /// The protocol version the client announced (0 = none).
    pub fn client_version(&self) -> u32 {
        self.client_version
    }

    /// Host memory lent to the VideoCore (answered or still pending).
    pub fn lent(&self) -> impl Iterator<Item = LentInfo> + '_ {
        self.heap
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.object {
                Some(Object::Lent {
                    addr,
                    size,
                    kernel_id,
                    ..
                }) => Some(LentInfo {
                    vc_handle: (s.generation << SLOT_BITS) | (i as u32 + 1),
                    addr,
                    size,
                    kernel_id,
                }),
                _ => None,
            })
    }

    /// VideoCore-initiated: ask the host for `size` bytes (VC_MEM_REQUEST). Needs a client that
    /// announced protocol version 2. Returns the message to send; the answer arrives as
    /// VC_MEM_REQUEST_REPLY.
    pub fn request_host_memory(
        &mut self,
        size: u32,
        align: u32,
        name: &[u8],
    ) -> Result<VcAction, SmemStatus> {
        if self.client_version < 2 {
            return Err(SmemStatus::NotSupported);
        }
        if size == 0 {
            return Err(SmemStatus::InvalidArgument);
        }
        let vc_trans_id = self.next_vc_trans;
        self.next_vc_trans = self.next_vc_trans.wrapping_add(1);
        let h = self.heap.insert(Object::Lent {
            vc_trans_id,
            addr: 0,
            size,
            kernel_id: 0,
        })?;
        let req = SmemVcMemRequest {
            cmd: U32::new(VC_INITIATED | SmemMsgType::VcMemRequest as u32),
            trans_id: U32::new(vc_trans_id),
            size: U32::new(size),
            align: U32::new(align),
            name: name_field(name),
            vc_handle: U32::new(h),
        };
        Ok(VcAction::Reply(req.as_bytes().to_vec()))
    }

    /// VideoCore-initiated: give lent host memory back (RELEASED keyed by the host's
    /// `kernel_id`).
    pub fn release_host_memory(&mut self, vc_handle: u32) -> Result<VcAction, SmemStatus> {
        let idx = self.heap.lookup(vc_handle)?;
        let Some(Object::Lent {
            addr,
            size,
            kernel_id,
            ..
        }) = self.heap.slots[idx].object
        else {
            return Err(SmemStatus::InvalidArgument);
        };
        if addr == 0 {
            return Err(SmemStatus::InvalidArgument);
        }
        self.heap.slots[idx].object = None;
        self.stats.released_sent += 1;
        let rel = SmemReleased {
            cmd: U32::new(VC_INITIATED | SmemMsgType::Released as u32),
            addr: U32::new(addr),
            size: U32::new(size),
            kernel_id: U32::new(kernel_id),
            vc_handle: U32::new(vc_handle),
        };
        Ok(VcAction::Reply(rel.as_bytes().to_vec()))
    }

    fn on_vc_mem_reply(&mut self, r: SmemVcMemRequestResult) {
        let t = r.trans_id.get();
        let found = self.heap.slots.iter_mut().find(|s| {
            matches!(s.object, Some(Object::Lent { vc_trans_id, addr: 0, .. }) if vc_trans_id == t)
        });
        match found {
            Some(slot) if r.addr.get() == 0 => {
                slot.object = None;
                self.stats.host_refusals += 1;
            }
            Some(slot) => {
                if let Some(Object::Lent {
                    addr, kernel_id, ..
                }) = slot.object.as_mut()
                {
                    *addr = r.addr.get();
                    *kernel_id = r.kernel_id.get();
                }
            }
            None => {
                self.stats.refused += 1;
                warn!(target: "vchi::smem", "VC_MEM_REQUEST_REPLY for unknown request {t:#x}");
            }
        }
    }

    fn alloc(
        &mut self,
        base_unit: u32,
        num_unit: u32,
        align: u32,
        name: [u8; NAME_LEN],
    ) -> Result<(u32, u32), SmemStatus> {
        let len = base_unit
            .checked_mul(num_unit)
            .filter(|&l| l > 0)
            .ok_or(SmemStatus::InvalidArgument)?;
        let align = if align == 0 { DEFAULT_ALIGN } else { align };
        if !align.is_power_of_two() {
            return Err(SmemStatus::InvalidArgument);
        }
        if self.heap.slots.iter().all(|s| s.object.is_some()) && self.heap.slots.len() >= MAX_SLOTS
        {
            return Err(SmemStatus::NoSpace);
        }
        let off = self.heap.carve(len, align)?;
        self.heap.mem[off as usize..(off + len) as usize].fill(0);
        match self.heap.insert(Object::Block {
            off,
            len,
            base_unit,
            num_unit,
            locks: 0,
            name,
        }) {
            Ok(h) => {
                debug!(target: "vchi::smem", "alloc {:?} {len} B at {:#x} -> {h:#x}", core::str::from_utf8(name_str(&name)).unwrap_or("?"), self.heap.base + off);
                self.stats.live_blocks += 1;
                Ok((h, self.heap.base + off))
            }
            Err(e) => {
                self.heap.release_range(off, len);
                Err(e)
            }
        }
    }

    fn check_mem(&self, obj: &Object, res_mem: u32) -> Result<(), SmemStatus> {
        match *obj {
            Object::Block { off, .. } if res_mem != 0 && res_mem != self.heap.base + off => {
                Err(SmemStatus::InvalidArgument)
            }
            _ => Ok(()),
        }
    }

    fn free(&mut self, m: SmemHandleMsg, out: &mut Vec<VcAction>) -> Result<(), SmemStatus> {
        let idx = self.heap.lookup(m.res_handle.get())?;
        let obj = self.heap.slots[idx]
            .object
            .clone()
            .ok_or(SmemStatus::StaleHandle)?;
        self.check_mem(&obj, m.res_mem.get())?;
        match obj {
            Object::Block { locks, .. } | Object::Import { locks, .. } if locks > 0 => {
                return Err(SmemStatus::Locked)
            }
            // Lent host memory is the VideoCore's to release, not the host's to free.
            Object::Lent { .. } => return Err(SmemStatus::InvalidArgument),
            Object::Block { off, len, .. } => {
                self.heap.release_range(off, len);
                self.stats.live_blocks -= 1;
            }
            Object::Import {
                addr,
                size,
                kernel_id,
                ..
            } => {
                self.stats.live_imports -= 1;
                if self.client_version >= 2 {
                    let rel = SmemReleased {
                        cmd: U32::new(VC_INITIATED | SmemMsgType::Released as u32),
                        addr: U32::new(addr),
                        size: U32::new(size),
                        kernel_id: U32::new(kernel_id),
                        vc_handle: m.res_handle,
                    };
                    // Queued after the FREE reply (the caller pushes the reply first).
                    out.push(VcAction::Reply(rel.as_bytes().to_vec()));
                    self.stats.released_sent += 1;
                }
            }
        }
        self.heap.slots[idx].object = None;
        Ok(())
    }

    fn lock(&mut self, m: SmemHandleMsg, delta: i32) -> Result<u32, SmemStatus> {
        let idx = self.heap.lookup(m.res_handle.get())?;
        let base = self.heap.base;
        let obj = self.heap.slots[idx]
            .object
            .as_mut()
            .ok_or(SmemStatus::StaleHandle)?;
        let (locks, addr) = match obj {
            Object::Block { locks, off, .. } => (locks, base + *off),
            Object::Import { locks, addr, .. } => (locks, *addr),
            Object::Lent { .. } => return Err(SmemStatus::InvalidArgument),
        };
        if m.res_mem.get() != 0 && m.res_mem.get() != addr {
            return Err(SmemStatus::InvalidArgument);
        }
        if delta > 0 {
            *locks = locks.checked_add(1).ok_or(SmemStatus::InvalidArgument)?;
        } else {
            *locks = locks.checked_sub(1).ok_or(SmemStatus::NotLocked)?;
        }
        Ok(addr)
    }

    fn handle(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        let (trans_id, req) = match SmemRequest::parse(msg) {
            Ok(r) => r,
            Err(e) => {
                self.stats.malformed += 1;
                warn!(target: "vchi::smem", "malformed request ({e}), {} bytes", msg.len());
                // Answer if at least the trans_id is readable, so the client does not hang.
                if msg.len() >= 8 {
                    let tid = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
                    let st = if e == fwipc_transport_api::ProtocolError::BadHeader {
                        SmemStatus::NotSupported
                    } else {
                        SmemStatus::InvalidArgument
                    };
                    self.stats.refused += 1;
                    out.push(result(tid, st.code()));
                }
                return;
            }
        };
        let mut events = Vec::new();
        let reply: Result<Option<Vec<u8>>, SmemStatus> = match req {
            SmemRequest::Alloc(a) => self
                .alloc(
                    a.base_unit.get(),
                    a.num_unit.get(),
                    a.alignment.get(),
                    a.name,
                )
                .map(|(h, addr)| {
                    Some(
                        SmemAllocResult {
                            trans_id: U32::new(trans_id),
                            res_handle: U32::new(h),
                            res_mem: U32::new(addr),
                            res_base_size: a.base_unit,
                            res_num: a.num_unit,
                        }
                        .as_bytes()
                        .to_vec(),
                    )
                }),
            SmemRequest::Lock(m) => self.lock(m, 1).map(|addr| {
                Some(
                    SmemLockResult {
                        trans_id: U32::new(trans_id),
                        res_handle: m.res_handle,
                        res_mem: U32::new(addr),
                        res_old_mem: U32::new(addr),
                    }
                    .as_bytes()
                    .to_vec(),
                )
            }),
            SmemRequest::Unlock(m) => self.lock(m, -1).map(|_| Some(ok_bytes(trans_id))),
            SmemRequest::UnlockNoAns(m) => match self.lock(m, -1) {
                Ok(_) => Ok(None),
                Err(e) => {
                    // No answer is allowed: count it and stay silent.
                    self.stats.refused += 1;
                    warn!(target: "vchi::smem", "UNLOCK_NOANS refused: {e:?}");
                    Ok(None)
                }
            },
            SmemRequest::Free(m) => self.free(m, &mut events).map(|_| Some(ok_bytes(trans_id))),
            SmemRequest::Import(i) => {
                let (addr, size) = (i.addr.get(), i.size.get());
                if size == 0 || addr == 0 || addr.checked_add(size - 1).is_none() {
                    Err(SmemStatus::InvalidArgument)
                } else {
                    if addr & 0xC000_0000 != 0xC000_0000 {
                        warn!(target: "vchi::smem", "import {addr:#x} outside the uncached alias");
                    }
                    self.heap
                        .insert(Object::Import {
                            addr,
                            size,
                            kernel_id: i.kernel_id.get(),
                            locks: 0,
                        })
                        .map(|h| {
                            self.stats.live_imports += 1;
                            Some(
                                SmemImportResult {
                                    trans_id: U32::new(trans_id),
                                    res_handle: U32::new(h),
                                }
                                .as_bytes()
                                .to_vec(),
                            )
                        })
                }
            }
            SmemRequest::ClientVersion(v) => {
                self.client_version = v.version.get();
                Ok(Some(ok_bytes(trans_id)))
            }
            SmemRequest::WalkAlloc => {
                for (i, s) in self.heap.slots.iter().enumerate() {
                    if let Some(o) = &s.object {
                        debug!(target: "vchi::smem", "slot {i} gen {}: {o:?}", s.generation);
                    }
                }
                Ok(Some(ok_bytes(trans_id)))
            }
            SmemRequest::ActionClean(_) => Ok(Some(ok_bytes(trans_id))),
            SmemRequest::Resize(_) => Err(SmemStatus::NotSupported),
            // The answer to our VC_MEM_REQUEST; it has no reply.
            SmemRequest::VcMemRequestReply(r) => {
                self.on_vc_mem_reply(r);
                Ok(None)
            }
        };
        match reply {
            Ok(Some(r)) => out.push(VcAction::Reply(r)),
            Ok(None) => {}
            Err(st) => {
                self.stats.refused += 1;
                debug!(target: "vchi::smem", "{:?} refused: {st:?}", req.msg_type());
                out.push(result(trans_id, st.code()));
            }
        }
        out.extend(events);
    }
}

fn ok_bytes(trans_id: u32) -> Vec<u8> {
    SmemResult {
        trans_id: U32::new(trans_id),
        success: I32::new(0),
    }
    .as_bytes()
    .to_vec()
}

fn result(trans_id: u32, status: i32) -> VcAction {
    VcAction::Reply(
        SmemResult {
            trans_id: U32::new(trans_id),
            success: I32::new(status),
        }
        .as_bytes()
        .to_vec(),
    )
}

impl VcService for SmemServer {
    fn fourcc(&self) -> u32 {
        fourcc::SMEM
    }

    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        self.handle(msg, out)
    }
}

/// One VideoCore memory area shared by every `'SMEM'` service instance (a VideoCore has one
/// heap): open services come and go, allocations and handles stay. What the firmware does with a
/// closed client's blocks is not public (unverified); this simulator keeps them until freed.
#[derive(Clone)]
pub struct SharedSmem(pub alloc::sync::Arc<spin::Mutex<SmemServer>>);

impl SharedSmem {
    /// Share `server`.
    pub fn new(server: SmemServer) -> Self {
        SharedSmem(alloc::sync::Arc::new(spin::Mutex::new(server)))
    }

    /// Run `f` on the server.
    pub fn with<R>(&self, f: impl FnOnce(&mut SmemServer) -> R) -> R {
        f(&mut self.0.lock())
    }
}

impl VcService for SharedSmem {
    fn fourcc(&self) -> u32 {
        fourcc::SMEM
    }

    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        self.0.lock().handle(msg, out)
    }
}

#[cfg(test)]
mod tests;
