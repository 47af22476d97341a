//! [`SmemHeap`]: the memory area of the simulated `'SMEM'` service
//! ([`crate::sim::vchi::SmemServer`]): first-fit allocation with coalescing over real bytes at a
//! bus base address, and the generational handle table whose objects (blocks, imports, lent host
//! memory) a handle names, so a freed or forged handle is told apart from a live one.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::vchi::error::SmemStatus;
use crate::vchi::smem_wire::NAME_LEN;

/// Byte written over freed blocks, so a use-after-free on the host side shows up in tests.
pub const POISON: u8 = 0xDD;

/// Handles: `generation << 12 | (slot + 1)`, generation 1..=0x7FFFF, so bit 31 is never set
/// (an 8-byte reply with a negative second word is always a status) and 0 is never a handle.
pub(super) const SLOT_BITS: u32 = 12;
pub(super) const MAX_SLOTS: usize = (1 << SLOT_BITS) - 1;
pub(super) const GEN_MASK: u32 = 0x7FFFF;

#[derive(Debug, Clone)]
pub(super) enum Object {
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
pub(super) struct Slot {
    pub(super) generation: u32,
    pub(super) object: Option<Object>,
}

/// One live allocated block, as the VideoCore sees it ([`crate::sim::vchi::SmemServer::blocks`]).
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

/// The memory area and the handle table of one `'SMEM'` server.
pub(super) struct SmemHeap {
    /// Bus address of the area's first byte.
    pub(super) base: u32,
    pub(super) mem: Vec<u8>,
    /// Free ranges: offset → length, non-overlapping, never adjacent (coalesced).
    pub(super) free: BTreeMap<u32, u32>,
    pub(super) slots: Vec<Slot>,
}

impl SmemHeap {
    /// An area of `size` bytes at bus address `base` (`base + size` must fit in 32 bits: every
    /// VideoCore address is a 32-bit bus address).
    pub(super) fn new(base: u32, size: u32) -> Self {
        assert!(
            base.checked_add(size).is_some(),
            "area must fit the 32-bit bus"
        );
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        SmemHeap {
            base,
            mem: vec![0; size as usize],
            free,
            slots: Vec::new(),
        }
    }

    /// VideoCore-side access to a live block: the bytes at bus address `addr..addr+len`, which must
    /// lie inside one live allocated block.
    pub(super) fn block_bytes(&self, addr: u32, len: u32) -> Result<&[u8], SmemStatus> {
        let (off, _) = self.live_range(addr, len)?;
        Ok(&self.mem[off as usize..(off + len) as usize])
    }

    /// Mutable VideoCore-side access to a live block (see [`Self::block_bytes`]).
    pub(super) fn block_bytes_mut(&mut self, addr: u32, len: u32) -> Result<&mut [u8], SmemStatus> {
        let (off, _) = self.live_range(addr, len)?;
        Ok(&mut self.mem[off as usize..(off + len) as usize])
    }

    /// The live allocated blocks (WALK_ALLOC's view).
    pub(super) fn blocks(&self) -> impl Iterator<Item = BlockInfo> + '_ {
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

    /// Free bytes in the area (sum of free ranges).
    pub(super) fn free_bytes(&self) -> u64 {
        self.free.values().map(|&l| u64::from(l)).sum()
    }

    pub(super) fn live_range(&self, addr: u32, len: u32) -> Result<(u32, u32), SmemStatus> {
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

    pub(super) fn lookup(&self, handle: u32) -> Result<usize, SmemStatus> {
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

    pub(super) fn insert(&mut self, object: Object) -> Result<u32, SmemStatus> {
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
    pub(super) fn carve(&mut self, len: u32, align: u32) -> Result<u32, SmemStatus> {
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

    pub(super) fn release_range(&mut self, off: u32, len: u32) {
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
}
