//! Host memory the VideoCore holds through the `'SMEM'` client ([`crate::vchi::Smem`]): host
//! buffers imported into the VideoCore, host blocks lent on its VC_MEM_REQUEST (through a
//! [`HostMemory`]), and the RELEASED events that give either back. Import ids sent to the
//! VideoCore (`kernel_id`) are indices into a generation-checked table, never addresses
//! (docs/protocols/vchiq.md §9 item 12). The messages themselves are the client's
//! (`smem_client.rs`).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use log::warn;

use super::smem_wire::SmemReleased;

/// A host buffer imported into the VideoCore. Move-only; give it back with
/// [`crate::vchi::Smem::free_import`]. The host memory must stay pinned until the matching
/// [`Released`] event arrives.
#[derive(Debug, PartialEq, Eq)]
pub struct SmemImport {
    pub(super) handle: u32,
    pub(super) kernel_id: u32,
    pub(super) addr: u32,
    pub(super) size: u32,
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

impl Released {
    /// The event as the RELEASED message carries it.
    pub(super) fn from_wire(r: &SmemReleased) -> Self {
        Released {
            kernel_id: r.kernel_id.get(),
            addr: r.addr.get(),
            size: r.size.get(),
            vc_handle: r.vc_handle.get(),
        }
    }
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

/// The generation-checked table of imports and lent blocks, and the RELEASED events not yet
/// taken. Sized at setup; nothing on its paths allocates.
pub(super) struct ImportTable {
    entries: Vec<ImportEntry>,
    released: VecDeque<Released>,
}

impl ImportTable {
    /// Up to `max` imports and lent blocks live (or awaiting release) at once.
    pub(super) fn new(max: u16) -> Self {
        ImportTable {
            entries: alloc::vec![
                ImportEntry {
                    generation: 0,
                    state: None
                };
                usize::from(max)
            ],
            released: VecDeque::with_capacity(usize::from(max)),
        }
    }

    /// Take a free entry under a new generation: its index and the `kernel_id` that names it.
    /// `None` when the table is full.
    pub(super) fn reserve(&mut self) -> Option<(usize, u32)> {
        let idx = self.entries.iter().position(|e| e.state.is_none())?;
        let e = &mut self.entries[idx];
        e.generation = e.generation.wrapping_add(1).max(1);
        Some((idx, (u32::from(e.generation) << 16) | (idx as u32 + 1)))
    }

    /// The VideoCore accepted the import reserved at `idx`.
    pub(super) fn set_live(&mut self, idx: usize, addr: u32, size: u32) {
        if let Some(e) = self.entries.get_mut(idx) {
            e.state = Some((ImportState::Live, addr, size));
        }
    }

    /// The VideoCore acknowledged FREE of import `kernel_id`: with RELEASED support (`releases`)
    /// the memory stays pinned until the event, else the entry is free at once.
    pub(super) fn freed(&mut self, kernel_id: u32, releases: bool) {
        let idx = (kernel_id & 0xFFFF) as usize - 1;
        if let Some(e) = self.entries.get_mut(idx) {
            if releases {
                if let Some(st) = e.state.as_mut() {
                    st.0 = ImportState::AwaitingRelease;
                }
            } else {
                e.state = None;
            }
        }
    }

    /// VC_MEM_REQUEST for `size` bytes aligned to `align`: lend them through `lender`, giving
    /// `(bus address, kernel_id)`, or `None` to refuse (no free entry, nothing lent, or a range
    /// that cannot exist on the 32-bit bus, which goes back to the lender).
    pub(super) fn lend(
        &mut self,
        lender: &mut impl HostMemory,
        size: u32,
        align: u32,
    ) -> Option<(u32, u32)> {
        let idx = self.entries.iter().position(|e| e.state.is_none())?;
        if size == 0 {
            return None;
        }
        let addr = lender.lend(size, align)?;
        if addr == 0 || addr.checked_add(size - 1).is_none() {
            lender.reclaim(addr, size);
            return None;
        }
        let e = &mut self.entries[idx];
        e.generation = e.generation.wrapping_add(1).max(1);
        e.state = Some((ImportState::Lent, addr, size));
        Some((addr, (u32::from(e.generation) << 16) | (idx as u32 + 1)))
    }

    /// A RELEASED event: frees its entry (a lent block goes back to `lender`) and queues the
    /// event for [`crate::vchi::Smem::take_released`]. `false` for one that names no entry of
    /// ours or the wrong range (bogus: nothing changes).
    pub(super) fn release(&mut self, r: Released, lender: &mut impl HostMemory) -> bool {
        let idx = (r.kernel_id & 0xFFFF) as usize;
        let generation = (r.kernel_id >> 16) as u16;
        match self.entries.get_mut(idx.wrapping_sub(1)) {
            Some(e) if e.generation == generation && e.state.is_some() => {
                let (st, addr, size) = e.state.unwrap_or((ImportState::Live, 0, 0));
                if st == ImportState::Live {
                    // The VideoCore may drop an import on its own; the host handle is still ours
                    // to FREE, which will then be refused as stale. Record it anyway.
                    warn!(target: "vchi::smem", "RELEASED for a live import {:#x}", r.kernel_id);
                }
                if (addr, size) != (r.addr, r.size) {
                    return false;
                }
                e.state = None;
                if st == ImportState::Lent {
                    lender.reclaim(addr, size);
                }
                if self.released.len() == self.released.capacity() {
                    self.released.pop_front();
                }
                self.released.push_back(r);
                true
            }
            _ => {
                warn!(target: "vchi::smem", "RELEASED for unknown kernel_id {:#x}", r.kernel_id);
                false
            }
        }
    }

    /// Imports freed by the host but not yet released by the VideoCore.
    pub(super) fn pending_releases(&self) -> usize {
        self.count(ImportState::AwaitingRelease)
    }

    /// Host blocks currently lent to the VideoCore.
    pub(super) fn lent_blocks(&self) -> usize {
        self.count(ImportState::Lent)
    }

    fn count(&self, st: ImportState) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state.is_some_and(|(s, _, _)| s == st))
            .count()
    }

    /// The next RELEASED event, oldest first.
    pub(super) fn take_released(&mut self) -> Option<Released> {
        self.released.pop_front()
    }
}
