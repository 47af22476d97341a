//! The VideoCore side of `'SMEM'`: what our simulated VideoCore runs for the shared-memory
//! client. It owns a real memory area (real bytes, a VideoCore bus base address), allocates blocks
//! from it first-fit with coalescing, and hands out generational handles so a freed or forged
//! handle is told apart from a live one and answered with a typed status, never acted on.
//!
//! Behaviour follows the old vc_sm / vc-sm-cma messages (docs/protocols/vchiq.md §8). Where the
//! real firmware's behaviour is not public it is marked (unverified): the failure encoding (see
//! [`crate::vchi::smem_wire`]), replying to FREE (vc-sm-cma does not wait for one), refusing to free a
//! locked block, and poisoning freed bytes.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use log::{debug, warn};
use zerocopy::little_endian::{I32, U32};
use zerocopy::IntoBytes;

use crate::vchi::error::SmemStatus;
use crate::vchi::fourcc;
use crate::vchi::link::{VcAction, VcService};
use crate::vchi::smem_wire::{
    name_field, name_str, SmemAllocResult, SmemHandleMsg, SmemImportResult, SmemLockResult,
    SmemMsgType, SmemReleased, SmemRequest, SmemResult, SmemVcMemRequest, SmemVcMemRequestResult,
    NAME_LEN, VC_INITIATED,
};

/// Handles: `generation << 12 | (slot + 1)`, generation 1..=0x7FFFF, so bit 31 is never set
/// (an 8-byte reply with a negative second word is always a status) and 0 is never a handle.
const SLOT_BITS: u32 = 12;
const MAX_SLOTS: usize = (1 << SLOT_BITS) - 1;
const GEN_MASK: u32 = 0x7FFFF;
/// Default block alignment when the request says 0 (one page).
pub const DEFAULT_ALIGN: u32 = 4096;
/// Byte written over freed blocks, so a use-after-free on the host side shows up in tests.
pub const POISON: u8 = 0xDD;

#[derive(Debug, Clone)]
enum Object {
    Block {
        off: u32,
        len: u32,
        base_unit: u32,
        num_unit: u32,
        locks: u32,
        name: [u8; NAME_LEN],
    },
    Import {
        addr: u32,
        size: u32,
        kernel_id: u32,
        locks: u32,
    },
    /// Host memory the VideoCore asked for with VC_MEM_REQUEST (`addr == 0` until answered).
    Lent {
        vc_trans_id: u32,
        addr: u32,
        size: u32,
        kernel_id: u32,
    },
}

#[derive(Debug, Clone, Default)]
struct Slot {
    generation: u32,
    object: Option<Object>,
}

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

/// One live allocated block, as the VideoCore sees it ([`SmemServer::blocks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its handle.
    pub handle: u32,
    /// Bus address.
    pub addr: u32,
    /// Length in bytes.
    pub len: u32,
    /// Requested unit size and count.
    pub units: (u32, u32),
    /// Lock count.
    pub locks: u32,
    /// Name given at allocation.
    pub name: [u8; NAME_LEN],
}

/// The VideoCore-side `'SMEM'` handler.
pub struct SmemServer {
    base: u32,
    mem: Vec<u8>,
    /// Free ranges: offset → length, non-overlapping, never adjacent (coalesced).
    free: BTreeMap<u32, u32>,
    slots: Vec<Slot>,
    client_version: u32,
    next_vc_trans: u32,
    stats: SmemServerStats,
}

impl SmemServer {
    /// A VideoCore memory area of `size` bytes at bus address `base` (`base + size` must fit in
    /// 32 bits: every VideoCore address is a 32-bit bus address).
    pub fn new(base: u32, size: u32) -> Self {
        assert!(
            base.checked_add(size).is_some(),
            "area must fit the 32-bit bus"
        );
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        SmemServer {
            base,
            mem: vec![0; size as usize],
            free,
            slots: Vec::new(),
            client_version: 0,
            next_vc_trans: 1,
            stats: SmemServerStats::default(),
        }
    }

    /// Bus base address of the area.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Size of the area.
    pub fn size(&self) -> u32 {
        self.mem.len() as u32
    }

    /// Counters.
    pub fn stats(&self) -> SmemServerStats {
        self.stats
    }

    /// Free bytes in the area (sum of free ranges).
    pub fn free_bytes(&self) -> u64 {
        self.free.values().map(|&l| u64::from(l)).sum()
    }

    /// The protocol version the client announced (0 = none).
    pub fn client_version(&self) -> u32 {
        self.client_version
    }

    /// VideoCore-side access to a live block: the bytes at bus address `addr..addr+len`, which must
    /// lie inside one live allocated block.
    pub fn block_bytes(&self, addr: u32, len: u32) -> Result<&[u8], SmemStatus> {
        let (off, _) = self.live_range(addr, len)?;
        Ok(&self.mem[off as usize..(off + len) as usize])
    }

    /// Mutable VideoCore-side access to a live block (see [`Self::block_bytes`]).
    pub fn block_bytes_mut(&mut self, addr: u32, len: u32) -> Result<&mut [u8], SmemStatus> {
        let (off, _) = self.live_range(addr, len)?;
        Ok(&mut self.mem[off as usize..(off + len) as usize])
    }

    /// The live allocated blocks (WALK_ALLOC's view).
    pub fn blocks(&self) -> impl Iterator<Item = BlockInfo> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.object {
                Some(Object::Block {
                    off,
                    len,
                    base_unit,
                    num_unit,
                    locks,
                    name,
                }) => Some(BlockInfo {
                    handle: (s.generation << SLOT_BITS) | (i as u32 + 1),
                    addr: self.base + off,
                    len,
                    units: (base_unit, num_unit),
                    locks,
                    name,
                }),
                _ => None,
            })
    }

    /// Host memory lent to the VideoCore (answered or still pending).
    pub fn lent(&self) -> impl Iterator<Item = LentInfo> + '_ {
        self.slots
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
        let h = self.insert(Object::Lent {
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
        let idx = self.lookup(vc_handle)?;
        let Some(Object::Lent {
            addr,
            size,
            kernel_id,
            ..
        }) = self.slots[idx].object
        else {
            return Err(SmemStatus::InvalidArgument);
        };
        if addr == 0 {
            return Err(SmemStatus::InvalidArgument);
        }
        self.slots[idx].object = None;
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
        let found = self.slots.iter_mut().find(|s| {
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

    fn live_range(&self, addr: u32, len: u32) -> Result<(u32, u32), SmemStatus> {
        let off = addr
            .checked_sub(self.base)
            .ok_or(SmemStatus::InvalidArgument)?;
        let end = off.checked_add(len).ok_or(SmemStatus::InvalidArgument)?;
        for s in &self.slots {
            if let Some(Object::Block {
                off: bo, len: bl, ..
            }) = s.object
            {
                if off >= bo && end <= bo + bl {
                    return Ok((off, end));
                }
            }
        }
        Err(SmemStatus::InvalidArgument)
    }

    fn lookup(&self, handle: u32) -> Result<usize, SmemStatus> {
        let idx = (handle & MAX_SLOTS as u32) as usize;
        let generation = handle >> SLOT_BITS;
        if idx == 0 || idx > self.slots.len() || generation == 0 {
            return Err(SmemStatus::UnknownHandle);
        }
        let slot = &self.slots[idx - 1];
        if generation > slot.generation {
            return Err(SmemStatus::UnknownHandle);
        }
        if generation < slot.generation || slot.object.is_none() {
            return Err(SmemStatus::StaleHandle);
        }
        Ok(idx - 1)
    }

    fn insert(&mut self, object: Object) -> Result<u32, SmemStatus> {
        let idx = match self.slots.iter().position(|s| s.object.is_none()) {
            Some(i) => i,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
            None => return Err(SmemStatus::NoSpace),
        };
        let slot = &mut self.slots[idx];
        slot.generation = match (slot.generation + 1) & GEN_MASK {
            0 => 1,
            g => g,
        };
        slot.object = Some(object);
        Ok((slot.generation << SLOT_BITS) | (idx as u32 + 1))
    }

    /// First-fit allocation of `len` bytes whose *bus address* is `align`-aligned.
    fn carve(&mut self, len: u32, align: u32) -> Result<u32, SmemStatus> {
        let mut found = None;
        for (&off, &flen) in &self.free {
            let bus = u64::from(self.base) + u64::from(off);
            let aligned = bus.div_ceil(u64::from(align)) * u64::from(align);
            let pad = aligned - bus;
            if pad + u64::from(len) <= u64::from(flen) {
                found = Some((off, flen, pad as u32));
                break;
            }
        }
        let (off, flen, pad) = found.ok_or(SmemStatus::NoSpace)?;
        self.free.remove(&off);
        if pad > 0 {
            self.free.insert(off, pad);
        }
        let start = off + pad;
        let tail = flen - pad - len;
        if tail > 0 {
            self.free.insert(start + len, tail);
        }
        Ok(start)
    }

    fn release_range(&mut self, off: u32, len: u32) {
        self.mem[off as usize..(off + len) as usize].fill(POISON);
        let mut start = off;
        let mut l = len;
        if let Some((&po, &pl)) = self.free.range(..off).next_back() {
            if po + pl == off {
                self.free.remove(&po);
                start = po;
                l += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(off + len)) {
            self.free.remove(&(off + len));
            l += nl;
        }
        self.free.insert(start, l);
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
        if self.slots.iter().all(|s| s.object.is_some()) && self.slots.len() >= MAX_SLOTS {
            return Err(SmemStatus::NoSpace);
        }
        let off = self.carve(len, align)?;
        self.mem[off as usize..(off + len) as usize].fill(0);
        match self.insert(Object::Block {
            off,
            len,
            base_unit,
            num_unit,
            locks: 0,
            name,
        }) {
            Ok(h) => {
                debug!(target: "vchi::smem", "alloc {:?} {len} B at {:#x} -> {h:#x}", core::str::from_utf8(name_str(&name)).unwrap_or("?"), self.base + off);
                self.stats.live_blocks += 1;
                Ok((h, self.base + off))
            }
            Err(e) => {
                self.release_range(off, len);
                Err(e)
            }
        }
    }

    fn check_mem(&self, obj: &Object, res_mem: u32) -> Result<(), SmemStatus> {
        match *obj {
            Object::Block { off, .. } if res_mem != 0 && res_mem != self.base + off => {
                Err(SmemStatus::InvalidArgument)
            }
            _ => Ok(()),
        }
    }

    fn free(&mut self, m: SmemHandleMsg, out: &mut Vec<VcAction>) -> Result<(), SmemStatus> {
        let idx = self.lookup(m.res_handle.get())?;
        let obj = self.slots[idx]
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
                self.release_range(off, len);
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
        self.slots[idx].object = None;
        Ok(())
    }

    fn lock(&mut self, m: SmemHandleMsg, delta: i32) -> Result<u32, SmemStatus> {
        let idx = self.lookup(m.res_handle.get())?;
        let base = self.base;
        let obj = self.slots[idx]
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
                    self.insert(Object::Import {
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
                for (i, s) in self.slots.iter().enumerate() {
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
mod tests {
    use super::*;
    use crate::vchi::smem_wire::{name_field, parse_reply, ReplyBody, SmemAlloc, MAX_REQUEST_LEN};
    use proptest::prelude::*;
    use zerocopy::FromBytes;

    fn run(s: &mut SmemServer, req: SmemRequest, tid: u32) -> Vec<Vec<u8>> {
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = req.encode(tid, &mut buf);
        let mut out = Vec::new();
        s.on_message(&buf[..n], &mut out);
        out.into_iter()
            .map(|a| match a {
                VcAction::Reply(r) => r,
                other => panic!("unexpected action {other:?}"),
            })
            .collect()
    }

    fn alloc(s: &mut SmemServer, len: u32, align: u32) -> Result<(u32, u32), i32> {
        let r = run(
            s,
            SmemRequest::Alloc(SmemAlloc {
                alloc_type: U32::new(0),
                base_unit: U32::new(len),
                num_unit: U32::new(1),
                alignment: U32::new(align),
                allocator: U32::new(1),
                name: name_field(b"t"),
            }),
            1,
        );
        match parse_reply::<SmemAllocResult>(&r[0]).unwrap() {
            ReplyBody::Ok(a) => Ok((a.res_handle.get(), a.res_mem.get())),
            ReplyBody::Failed(c) => Err(c),
        }
    }

    fn free(s: &mut SmemServer, h: u32) -> i32 {
        let r = run(
            s,
            SmemRequest::Free(SmemHandleMsg {
                res_handle: U32::new(h),
                res_mem: U32::new(0),
            }),
            2,
        );
        SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get()
    }

    #[test]
    fn alloc_free_double_free_and_forged_handles() {
        let mut s = SmemServer::new(0x4000_0000, 64 * 1024);
        let (h, addr) = alloc(&mut s, 1000, 0).unwrap();
        assert_eq!(addr % DEFAULT_ALIGN, 0);
        assert!(h & 0x8000_0000 == 0 && h != 0);
        s.block_bytes_mut(addr, 1000).unwrap()[999] = 0x5A;
        assert_eq!(s.block_bytes(addr + 999, 1).unwrap(), &[0x5A]);
        assert!(s.block_bytes(addr + 999, 2).is_err(), "past the block end");
        assert_eq!(free(&mut s, h), 0);
        assert_eq!(free(&mut s, h), SmemStatus::StaleHandle.code());
        assert_eq!(
            free(&mut s, h + (1 << 12)),
            SmemStatus::UnknownHandle.code()
        );
        assert_eq!(free(&mut s, 0), SmemStatus::UnknownHandle.code());
        assert_eq!(free(&mut s, 0x7FF), SmemStatus::UnknownHandle.code());
        // The slot is reused with a new generation; the old handle stays stale.
        let (h2, _) = alloc(&mut s, 10, 0).unwrap();
        assert_ne!(h2, h);
        assert_eq!(h2 & 0xFFF, h & 0xFFF);
        assert_eq!(free(&mut s, h), SmemStatus::StaleHandle.code());
        assert_eq!(free(&mut s, h2), 0);
        assert_eq!(s.free_bytes(), 64 * 1024);
        assert_eq!(s.stats().live_blocks, 0);
    }

    #[test]
    fn freed_bytes_are_poisoned_and_new_blocks_zeroed() {
        let mut s = SmemServer::new(0x1000, 8192);
        let (h, addr) = alloc(&mut s, 4096, 0).unwrap();
        s.block_bytes_mut(addr, 4096).unwrap().fill(0xAB);
        free(&mut s, h);
        assert!(s.mem[..4096].iter().all(|&b| b == POISON));
        let (_, addr2) = alloc(&mut s, 4096, 0).unwrap();
        assert!(s.block_bytes(addr2, 4096).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn exhaustion_is_no_space_and_bad_sizes_are_invalid() {
        let mut s = SmemServer::new(0, 8192);
        assert!(alloc(&mut s, 8192, 0).is_ok());
        assert_eq!(alloc(&mut s, 1, 0), Err(SmemStatus::NoSpace.code()));
        assert_eq!(alloc(&mut s, 0, 0), Err(SmemStatus::InvalidArgument.code()));
        assert_eq!(alloc(&mut s, 4, 3), Err(SmemStatus::InvalidArgument.code()));
    }

    #[test]
    fn lock_unlock_and_free_while_locked() {
        let mut s = SmemServer::new(0x8000, 4096);
        let (h, addr) = alloc(&mut s, 64, 64).unwrap();
        let m = SmemHandleMsg {
            res_handle: U32::new(h),
            res_mem: U32::new(addr),
        };
        let r = run(&mut s, SmemRequest::Lock(m), 5);
        let lr = SmemLockResult::read_from_prefix(&r[0]).unwrap().0;
        assert_eq!((lr.trans_id.get(), lr.res_mem.get()), (5, addr));
        assert_eq!(free(&mut s, h), SmemStatus::Locked.code());
        let r = run(&mut s, SmemRequest::Unlock(m), 6);
        assert_eq!(
            SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get(),
            0
        );
        let r = run(&mut s, SmemRequest::Unlock(m), 7);
        assert_eq!(
            SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get(),
            SmemStatus::NotLocked.code()
        );
        // Wrong res_mem for the handle.
        let bad = SmemHandleMsg {
            res_handle: U32::new(h),
            res_mem: U32::new(addr + 4),
        };
        let r = run(&mut s, SmemRequest::Lock(bad), 8);
        assert_eq!(
            parse_reply::<SmemLockResult>(&r[0]).unwrap(),
            ReplyBody::Failed(SmemStatus::InvalidArgument.code())
        );
        assert_eq!(free(&mut s, h), 0);
    }

    #[test]
    fn minor_requests() {
        use crate::vchi::smem_wire::{SmemActionClean, SmemResize, SmemVersion};
        let mut s = SmemServer::new(0x8000, 8192);
        let (h, addr) = alloc(&mut s, 64, 0).unwrap();
        let status =
            |r: &Vec<Vec<u8>>| SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get();
        let r = run(
            &mut s,
            SmemRequest::Resize(SmemResize {
                res_handle: U32::new(h),
                res_mem: U32::new(addr),
                res_new_size: U32::new(128),
            }),
            1,
        );
        assert_eq!(status(&r), SmemStatus::NotSupported.code());
        assert_eq!(status(&run(&mut s, SmemRequest::WalkAlloc, 2)), 0);
        let r = run(
            &mut s,
            SmemRequest::ActionClean(SmemActionClean {
                res_action: U32::new(0),
                action_trans_id: U32::new(1),
            }),
            3,
        );
        assert_eq!(status(&r), 0);
        let r = run(
            &mut s,
            SmemRequest::ClientVersion(SmemVersion {
                version: U32::new(2),
            }),
            4,
        );
        assert_eq!(status(&r), 0);
        assert_eq!(s.client_version(), 2);
        // UNLOCK_NOANS: silent, even when refused (counted).
        let m = SmemHandleMsg {
            res_handle: U32::new(h),
            res_mem: U32::new(addr),
        };
        run(&mut s, SmemRequest::Lock(m), 5);
        assert!(run(&mut s, SmemRequest::UnlockNoAns(m), 6).is_empty());
        let refused = s.stats().refused;
        assert!(run(&mut s, SmemRequest::UnlockNoAns(m), 7).is_empty());
        assert_eq!(s.stats().refused, refused + 1);
        assert_eq!(s.blocks().next().unwrap().locks, 0);
        // The reply echoes each request's trans_id.
        assert_eq!(
            SmemResult::read_from_prefix(&r[0])
                .unwrap()
                .0
                .trans_id
                .get(),
            4
        );
    }

    #[test]
    fn garbage_gets_a_status_or_silence_never_a_panic() {
        let mut s = SmemServer::new(0, 4096);
        let mut out = Vec::new();
        s.on_message(&[1, 2, 3], &mut out);
        assert!(out.is_empty());
        s.on_message(&[77, 0, 0, 0, 9, 0, 0, 0], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.stats().malformed, 2);
    }

    proptest! {
        /// Random alloc/free sequences: blocks never overlap, stay aligned and inside the area,
        /// and freeing everything restores one free range of the whole area.
        #[test]
        fn allocator_invariants(ops in proptest::collection::vec((1u32..3000, 0u32..4, any::<bool>()), 1..60)) {
            let mut s = SmemServer::new(0x2000_0000, 32 * 1024);
            let mut live: Vec<(u32, u32, u32)> = Vec::new();
            for (len, align_pow, do_free) in ops {
                if do_free && !live.is_empty() {
                    let (h, _, _) = live.remove(0);
                    prop_assert_eq!(free(&mut s, h), 0);
                    continue;
                }
                let align = 1u32 << (align_pow * 3);
                if let Ok((h, addr)) = alloc(&mut s, len, align) {
                    prop_assert_eq!(addr % align, 0);
                    prop_assert!(addr >= 0x2000_0000 && addr + len <= 0x2000_0000 + 32 * 1024);
                    for &(_, a, l) in &live {
                        prop_assert!(addr + len <= a || a + l <= addr, "overlap");
                    }
                    live.push((h, addr, len));
                }
            }
            for (h, _, _) in live {
                prop_assert_eq!(free(&mut s, h), 0);
            }
            prop_assert_eq!(s.free.len(), 1);
            prop_assert_eq!(s.free_bytes(), 32 * 1024);
        }
    }
}
