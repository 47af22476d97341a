//! Pagelists (docs/protocols/vchiq.md §5): the slave describes a bulk buffer to the master as
//! `{u32 length, u16 type, u16 offset, u32 addrs[]}` in coherent memory, each address entry a
//! page-aligned bus address ORed with (run length in pages − 1). Receives whose ends are not
//! cache-line aligned use a fragment: the master writes the partial head and tail lines into the
//! fragment's `headbuf`/`tailbuf`, the slave copies them into place, and the CPU never has to
//! invalidate a cache line it shares with unrelated data.

use core::sync::atomic::Ordering;

use crate::error::{Result, VchiqError};
use crate::platform::Platform;
use crate::shared::region::Region;
use crate::wire::consts::*;
use fwipc_transport_api::ProtocolError;

const PAGE: usize = VCHIQ_SLOT_SIZE;

/// The head/tail split of a fragment receive of `len` bytes at page offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentSplit {
    /// Bytes of the partial first line (copied from `headbuf`).
    pub head: usize,
    /// Bytes of the partial last line (copied from `tailbuf`).
    pub tail: usize,
}

/// Linux `free_pagelist`'s arithmetic: head = (CL − offset) mod CL capped at `len`; tail =
/// (offset + len) mod CL, only if the head did not already cover everything.
pub fn fragment_split(offset: usize, len: usize, cl: usize) -> FragmentSplit {
    let head = ((cl - offset % cl) % cl).min(len);
    let tail = if head < len { (offset + len) % cl } else { 0 };
    FragmentSplit { head, tail }
}

/// Whether a receive of `len` bytes at address `addr` needs a fragment.
pub fn needs_fragment(addr: usize, len: usize, cl: usize) -> bool {
    len > 0 && (!addr.is_multiple_of(cl) || !(addr + len).is_multiple_of(cl))
}

/// Run-length limit and encoding of one address entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryFormat {
    /// Classic: page-aligned 32-bit bus address | (pages − 1), up to 4096 pages.
    Classic,
    /// Pi 4 "36-bit": ((addr >> 4) & !0xFF) | (pages − 1), up to 256 pages.
    Addr36,
}

impl EntryFormat {
    fn max_run(self) -> u64 {
        match self {
            EntryFormat::Classic => 4096,
            EntryFormat::Addr36 => 256,
        }
    }

    fn encode(self, base: u64, pages: u64) -> Option<u32> {
        match self {
            EntryFormat::Classic => Some(u32::try_from(base).ok()? | (pages - 1) as u32),
            EntryFormat::Addr36 => {
                if base >= 1 << 36 {
                    return None;
                }
                Some((((base >> 4) as u32) & !0xFF) | (pages - 1) as u32)
            }
        }
    }

    /// (bus base, pages) of an entry.
    pub fn decode(self, e: u32) -> (u64, u64) {
        match self {
            EntryFormat::Classic => ((e & !(PAGE as u32 - 1)) as u64, (e & 0xFFF) as u64 + 1),
            EntryFormat::Addr36 => (((e & !0xFF) as u64) << 4, (e & 0xFF) as u64 + 1),
        }
    }
}

/// Slave: map the pages of `[addr, addr+len)` and write the pagelist at region offset `pl_off`.
/// On failure every page mapped so far is unmapped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    region: &Region,
    platform: &dyn Platform,
    pl_off: usize,
    pl_size: usize,
    addr: usize,
    len: usize,
    ty: u16,
    fmt: EntryFormat,
) -> Result {
    let page_off = addr % PAGE;
    let first = addr - page_off;
    let pages = (page_off + len).div_ceil(PAGE);
    let max_entries = (pl_size - 8) / 4;
    // The transfer's identity for the platform: the bus address of its pagelist.
    let owner = region.bus().wrapping_add(pl_off as u32);
    let mut entries = 0usize;
    let mut run_base = 0u64;
    let mut run_pages = 0u64;
    let mut mapped = 0usize;
    let fail = |mapped: usize, e: VchiqError| {
        if mapped > 0 {
            platform.unmap_bulk_run(owner, first, mapped);
        }
        Err(e)
    };
    let flush = |base: u64, n: u64, entries: &mut usize| -> Result {
        if *entries == max_entries {
            return Err(VchiqError::TooLarge);
        }
        let e = fmt.encode(base, n).ok_or(VchiqError::Invalid)?;
        // Relaxed (docs/protocols/vchiq.md §3 barrier 8): published, like the header below, by the
        // wmb + Release store of the tx_pos that carries the BULK_TX/RX message referencing this
        // pagelist.
        region.store(pl_off + 8 + 4 * *entries, e, Ordering::Relaxed);
        *entries += 1;
        Ok(())
    };
    let wide = fmt == EntryFormat::Addr36;
    while mapped < pages {
        // One platform call per run of pages contiguous on the bus (one for the whole buffer
        // where the platform can), not one per page.
        let Some((bus, n)) =
            platform.map_bulk_run(owner, first + mapped * PAGE, pages - mapped, wide)
        else {
            return fail(mapped, VchiqError::Invalid);
        };
        if n == 0 || n > pages - mapped {
            // Outside the `Platform` contract: unmap what the earlier calls mapped.
            return fail(mapped, VchiqError::Invalid);
        }
        mapped += n;
        // A classic entry holds a 32-bit address; the pages are unmapped with the others.
        let last = (n as u64 - 1) * PAGE as u64;
        if bus % PAGE as u64 != 0
            || bus
                .checked_add(last)
                .is_none_or(|end| !wide && end > u64::from(u32::MAX))
        {
            return fail(mapped, VchiqError::Invalid);
        }
        // Split the run into entries of at most `max_run` pages, merging with the previous run
        // where the bus addresses continue it.
        let (mut bus, mut n) = (bus, n as u64);
        while n > 0 {
            if run_pages > 0
                && run_pages < fmt.max_run()
                && run_base + run_pages * PAGE as u64 == bus
            {
                let k = n.min(fmt.max_run() - run_pages);
                run_pages += k;
                bus += k * PAGE as u64;
                n -= k;
                continue;
            }
            if run_pages > 0 {
                if let Err(e) = flush(run_base, run_pages, &mut entries) {
                    return fail(mapped, e);
                }
            }
            let k = n.min(fmt.max_run());
            run_base = bus;
            run_pages = k;
            bus += k * PAGE as u64;
            n -= k;
        }
    }
    if run_pages > 0 {
        if let Err(e) = flush(run_base, run_pages, &mut entries) {
            return fail(mapped, e);
        }
    }
    // Relaxed: the pagelist is published by the Release store of tx_pos that carries the
    // BULK_TX/RX message referencing it (docs/protocols/vchiq.md §3 barrier 8).
    region.store(pl_off, len as u32, Ordering::Relaxed);
    region.store(
        pl_off + 4,
        ty as u32 | ((page_off as u32) << 16),
        Ordering::Relaxed,
    );
    Ok(())
}

/// Slave: unmap the pages of `[addr, addr+len)`, mapped for the transfer whose pagelist is at
/// bus address `pagelist`.
pub(crate) fn unmap(platform: &dyn Platform, pagelist: u32, addr: usize, len: usize) {
    let page_off = addr % PAGE;
    let pages = (page_off + len).div_ceil(PAGE);
    if pages > 0 {
        platform.unmap_bulk_run(pagelist, addr - page_off, pages);
    }
}

/// A pagelist as the master reads it (all values from the peer: untrusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagelistView {
    /// Transfer length.
    pub length: u32,
    /// Type.
    pub ty: u16,
    /// Offset in the first page.
    pub offset: u16,
    entries_off: usize,
    max_entries: usize,
    fmt: EntryFormat,
}

/// Master: read and check a pagelist header at region offset `pl_off` (`pl_size` bytes there).
pub fn parse(
    region: &Region,
    pl_off: usize,
    pl_size: usize,
    fmt: EntryFormat,
) -> core::result::Result<PagelistView, ProtocolError> {
    if pl_size < 8 || pl_off.checked_add(pl_size).is_none_or(|e| e > region.len()) {
        return Err(ProtocolError::OutOfRange);
    }
    // Relaxed: published by the slave's Release store of tx_pos, which our Acquire load of it
    // (before parsing BULK_TX/RX) synchronised with.
    let length = region.load(pl_off, Ordering::Relaxed);
    let w = region.load(pl_off + 4, Ordering::Relaxed);
    let (ty, offset) = (w as u16, (w >> 16) as u16);
    if offset as usize >= PAGE || length > i32::MAX as u32 {
        return Err(ProtocolError::BadLength);
    }
    Ok(PagelistView {
        length,
        ty,
        offset,
        entries_off: pl_off + 8,
        max_entries: (pl_size - 8) / 4,
        fmt,
    })
}

/// Master: call `f(data_index, bus_addr, len)` for each chunk of the transfer that one entry's
/// run covers (contiguous on the bus, possibly several pages), in order. Bounded by the entry
/// count; every address computation is checked.
pub fn walk(
    region: &Region,
    v: &PagelistView,
    mut f: impl FnMut(usize, u64, usize) -> core::result::Result<(), ProtocolError>,
) -> core::result::Result<(), ProtocolError> {
    let mut remaining = v.length as usize;
    let mut pos = v.offset as usize;
    let mut index = 0usize;
    let mut entry = 0usize;
    while remaining > 0 {
        if entry >= v.max_entries {
            return Err(ProtocolError::OutOfRange);
        }
        // Relaxed: ordered, like the header in `parse`, by our Acquire (+ rmb) of the slave's
        // tx_pos before the BULK_TX/RX message was parsed; every entry is range-checked.
        let e = region.load(v.entries_off + 4 * entry, Ordering::Relaxed);
        entry += 1;
        let (base, pages) = v.fmt.decode(e);
        let run = pages as usize * PAGE;
        if pos >= run {
            pos -= run;
            continue;
        }
        let c = (run - pos).min(remaining);
        let bus = base
            .checked_add(pos as u64)
            .ok_or(ProtocolError::OutOfRange)?;
        f(index, bus, c)?;
        index += c;
        remaining -= c;
        pos = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::region::OwnedRegion;
    use proptest::prelude::*;

    /// A platform whose pages map to a bus window with a hole every `gap`-th page, so runs
    /// both merge and split; `map_bulk_run` maps up to `per_call` pages at once (0: one page, as
    /// the trait's default does).
    struct Gappy {
        gap: usize,
        per_call: usize,
    }

    impl Gappy {
        fn bus(&self, cpu_page: usize, wide: bool) -> u64 {
            if wide {
                self.map_page_wide(cpu_page).unwrap()
            } else {
                u64::from(self.map_page(cpu_page).unwrap())
            }
        }
    }
    // SAFETY: test double; translation is a pure function and nothing is dereferenced.
    unsafe impl Platform for Gappy {
        fn ring_doorbell(&self) {}
        fn map_page(&self, cpu_page: usize) -> Option<u32> {
            let n = cpu_page / PAGE;
            let skew = n.checked_div(self.gap).unwrap_or(0);
            Some(0x8000_0000u32.wrapping_add(((n + skew) * PAGE) as u32))
        }
        fn map_page_wide(&self, cpu_page: usize) -> Option<u64> {
            // Above 4 GiB, as on a Pi 4 with 8 GiB.
            self.map_page(cpu_page).map(|b| b as u64 + 0x7_0000_0000)
        }
        fn map_bulk_run(
            &self,
            _pagelist: u32,
            cpu_page: usize,
            pages: usize,
            wide: bool,
        ) -> Option<(u64, usize)> {
            let bus = self.bus(cpu_page, wide);
            let mut n = 1;
            while n < pages.min(self.per_call)
                && self.bus(cpu_page + n * PAGE, wide) == bus + (n * PAGE) as u64
            {
                n += 1;
            }
            Some((bus, n))
        }
    }

    proptest! {
        /// build → parse → walk covers exactly [0, len) in order, each chunk one run contiguous
        /// on the bus, every page of it at the bus address the platform gave for that byte,
        /// whether the platform maps page by page or many pages per call.
        #[test]
        fn build_parse_walk_roundtrip(addr in 0usize..(1 << 20), len in 0usize..(2 << 20), gap in 0usize..4, per_call in 0usize..600, wide: bool) {
            let mem = OwnedRegion::new(8192).unwrap();
            let r = mem.region(0x4000_0000).unwrap();
            let pf = Gappy { gap, per_call };
            let fmt = if wide { EntryFormat::Addr36 } else { EntryFormat::Classic };
            build(&r, &pf, 0, 4096, addr, len, PAGELIST_READ, fmt).unwrap();
            let v = parse(&r, 0, 4096, fmt).unwrap();
            prop_assert_eq!((v.length as usize, v.ty, v.offset as usize), (len, PAGELIST_READ, addr % PAGE));
            let mut next = 0usize;
            walk(&r, &v, |i, bus, c| {
                assert_eq!(i, next);
                assert!(c > 0);
                // The chunk's first byte and the first byte of each later page it covers.
                let mut j = 0;
                while j < c {
                    let cpu = addr + i + j;
                    let want = pf.bus(cpu - cpu % PAGE, wide) + (cpu % PAGE) as u64;
                    assert_eq!(bus + j as u64, want, "byte {}", i + j);
                    j += PAGE - cpu % PAGE;
                }
                assert!(
                    (bus % PAGE as u64) as usize + c <= fmt.max_run() as usize * PAGE,
                    "chunk longer than one entry's run"
                );
                next += c;
                Ok(())
            })
            .unwrap();
            prop_assert_eq!(next, len);
        }
    }

    #[test]
    fn split_matches_linux_arithmetic() {
        let cl = 64;
        assert_eq!(
            fragment_split(0, 128, cl),
            FragmentSplit { head: 0, tail: 0 }
        );
        assert_eq!(
            fragment_split(1, 128, cl),
            FragmentSplit { head: 63, tail: 1 }
        );
        assert_eq!(
            fragment_split(60, 2, cl),
            FragmentSplit { head: 2, tail: 0 }
        );
        assert_eq!(
            fragment_split(60, 4, cl),
            FragmentSplit { head: 4, tail: 0 }
        );
        assert_eq!(
            fragment_split(60, 5, cl),
            FragmentSplit { head: 4, tail: 1 }
        );
        assert_eq!(
            fragment_split(0, 65, cl),
            FragmentSplit { head: 0, tail: 1 }
        );
        assert!(!needs_fragment(64, 64, cl));
        assert!(needs_fragment(65, 63, cl));
        assert!(!needs_fragment(3, 0, cl));
    }
}
