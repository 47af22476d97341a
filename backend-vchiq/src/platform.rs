//! What the embedder provides: "ring the other side", address translation for bulk DMA, and cache
//! maintenance, and the barriers that order shared memory for the peer. One `unsafe trait` (the
//! virtio-drivers HAL pattern).

use crate::sync::Barriers;
use crate::wire::consts::VCHIQ_SLOT_SIZE;

/// The platform glue of one VCHIQ instance.
///
/// # Implementation safety
/// - [`Platform::map_page`] must return a bus address through which the peer's DMA reaches exactly
///   the CPU page given, for as long as the page stays mapped (until [`Platform::unmap_page`]).
/// - The same holds for [`Platform::map_page_wide`] / [`Platform::bus_to_cpu_wide`], and for
///   [`Platform::map_bulk_page`] / [`Platform::bulk_bus_to_cpu`] (until
///   [`Platform::unmap_bulk_page`]); `bulk_bus_to_cpu` must return only pages mapped for the
///   pagelist it is given.
/// - [`Platform::map_bulk_run`] maps pages as [`Platform::map_bulk_page`] does, several at once:
///   it returns `(bus, n)` with `1 <= n <= pages`, and the peer's DMA through `bus + k * 4096`
///   must reach exactly the CPU page `cpu_page + k * 4096` for every `k < n`, until those pages
///   are unmapped ([`Platform::unmap_bulk_run`] or [`Platform::unmap_bulk_page`], page by page or
///   in any grouping).
/// - [`Platform::bulk_bus_to_cpu_run`] returns `(cpu, n)` with `1 <= n <= pages` only if each of
///   the `n` bus pages from `bus_page` on is mapped for the pagelist given and
///   `bus_page + k * 4096` is the CPU page `cpu + k * 4096` for every `k < n`; the core copies
///   the `n * 4096` bytes at `cpu` as one range, so they must be valid as
///   [`Platform::bus_to_cpu`]'s page is. `None` if `bus_page` is not mapped for that pagelist.
/// - [`Platform::bus_to_cpu`] (used by the master role only) must return the CPU address of a page
///   that is valid for reads and writes of 4096 bytes while the peer keeps the transfer queued; the
///   core copies the peer's buffers through it with atomic byte accesses only (never word
///   accesses: see `crate::shared::region`) and refuses a page inside the shared region.
///
/// # Barriers
/// The protocol calls [`Platform::wmb`], [`Platform::rmb`] and [`Platform::mb`] where Linux's
/// driver issues `wmb()`/`rmb()`/`mb()`/`dsb(sy)` (docs/protocols/vchiq.md §3). The defaults
/// suit a peer that is another thread in our coherence domain (the simulator, a VMM); a real
/// VideoCore needs `dsb` ([`crate::bcm2835::PiPlatform`]). An implementation of `mb` must be at
/// least as strong as `fence(SeqCst)` (the lost-wake-up proof relies on it).
pub unsafe trait Platform: Send + Sync {
    /// Ring the other side's doorbell (ARM→VPU: write BELL2; in the simulator, wake its worker).
    fn ring_doorbell(&self);

    /// Ask the local worker to run [`crate::Vchiq::poll`] soon (Linux `request_poll`). Default: no
    /// worker, the caller polls.
    fn request_poll(&self) {}

    /// Bus address (page-aligned) for the CPU page at `cpu_page` (page-aligned). `None` if the page
    /// cannot be given to the peer.
    fn map_page(&self, cpu_page: usize) -> Option<u32>;

    /// The peer is done with a page given by [`Platform::map_page`].
    fn unmap_page(&self, cpu_page: usize) {
        let _ = cpu_page;
    }

    /// Master role: the CPU address of the bus page `bus_page`, if it is one the slave mapped.
    fn bus_to_cpu(&self, bus_page: u32) -> Option<usize> {
        let _ = bus_page;
        None
    }

    /// Slave role: map `cpu_page` for the bulk transfer whose pagelist is at bus address
    /// `pagelist` (`wide`: [`Platform::map_page_wide`]'s 36-bit range). The core maps every bulk
    /// page through this, so an implementation that records the owner can give the master only
    /// the pages of the transfer it serves ([`Platform::bulk_bus_to_cpu`]). Default: forgets the
    /// owner and calls `map_page` / `map_page_wide`.
    fn map_bulk_page(&self, pagelist: u32, cpu_page: usize, wide: bool) -> Option<u64> {
        let _ = pagelist;
        if wide {
            self.map_page_wide(cpu_page)
        } else {
            self.map_page(cpu_page).map(u64::from)
        }
    }

    /// Slave role: the transfer whose pagelist is at `pagelist` is done with `cpu_page` (the
    /// counterpart of [`Platform::map_bulk_page`]). Default: `unmap_page`.
    fn unmap_bulk_page(&self, pagelist: u32, cpu_page: usize) {
        let _ = pagelist;
        self.unmap_page(cpu_page)
    }

    /// Master role: the CPU address of `bus_page` if the slave mapped it for the transfer whose
    /// pagelist is at `pagelist`, `None` for any other page, mapped or not. The slave writes the
    /// pagelist, so without this check a hostile slave steers the master's copies into whatever
    /// is mapped (another transfer's buffer). Default: `bus_to_cpu_wide`, which cannot tell
    /// transfers apart; the simulators' platforms check the owner (a real VideoCore is the
    /// master on hardware, so this crate's master role runs only against them).
    fn bulk_bus_to_cpu(&self, pagelist: u32, bus_page: u64) -> Option<usize> {
        let _ = pagelist;
        self.bus_to_cpu_wide(bus_page)
    }

    /// Slave role: map up to `pages` pages from `cpu_page` (page-aligned, `pages >= 1`) for the
    /// bulk transfer whose pagelist is at bus address `pagelist`, as one run contiguous on the
    /// bus: `(bus address of cpu_page, pages mapped)`, at least one page and at most `pages`. The
    /// core calls it until the buffer is mapped, so an implementation may map fewer pages than
    /// asked (where its bus window or its contiguity ends). Default: one page through
    /// [`Platform::map_bulk_page`].
    fn map_bulk_run(
        &self,
        pagelist: u32,
        cpu_page: usize,
        pages: usize,
        wide: bool,
    ) -> Option<(u64, usize)> {
        let _ = pages;
        self.map_bulk_page(pagelist, cpu_page, wide).map(|b| (b, 1))
    }

    /// Slave role: the transfer whose pagelist is at `pagelist` is done with the `pages` pages
    /// from `cpu_page` (mapped by [`Platform::map_bulk_run`] or [`Platform::map_bulk_page`], in
    /// one or several calls). Default: [`Platform::unmap_bulk_page`] for each.
    fn unmap_bulk_run(&self, pagelist: u32, cpu_page: usize, pages: usize) {
        for i in 0..pages {
            self.unmap_bulk_page(
                pagelist,
                cpu_page.wrapping_add(i.wrapping_mul(VCHIQ_SLOT_SIZE)),
            );
        }
    }

    /// Master role: `(CPU address of bus_page, n)` with `1 <= n <= pages`, if the slave mapped
    /// `bus_page` for the transfer whose pagelist is at `pagelist`: the `n` bus pages from
    /// `bus_page` on are all mapped for that transfer and contiguous in CPU memory, so the core
    /// copies them as one range. `None` for a page not mapped for that transfer (see
    /// [`Platform::bulk_bus_to_cpu`]). Default: one page through [`Platform::bulk_bus_to_cpu`].
    fn bulk_bus_to_cpu_run(
        &self,
        pagelist: u32,
        bus_page: u64,
        pages: usize,
    ) -> Option<(usize, usize)> {
        let _ = pages;
        self.bulk_bus_to_cpu(pagelist, bus_page).map(|c| (c, 1))
    }

    /// Like [`Platform::map_page`] for [`crate::Config::pagelist_addr36`] (Pi 4 "36-bit" mode):
    /// a bus address below 2^36. Defaults to `map_page`.
    fn map_page_wide(&self, cpu_page: usize) -> Option<u64> {
        self.map_page(cpu_page).map(u64::from)
    }

    /// Like [`Platform::bus_to_cpu`] for wide bus addresses. Defaults to `bus_to_cpu`.
    fn bus_to_cpu_wide(&self, bus_page: u64) -> Option<usize> {
        u32::try_from(bus_page)
            .ok()
            .and_then(|b| self.bus_to_cpu(b))
    }

    /// Write barrier toward the peer (Linux `wmb`; `dsb st` on a Pi). Default: nothing, since
    /// each call is followed by a Release store (enough within our coherence domain).
    fn wmb(&self) {
        crate::sync::Fences.wmb()
    }

    /// Read barrier toward the peer (Linux `rmb`; `dsb ld` on a Pi). Default: nothing, since each
    /// call follows an Acquire load.
    fn rmb(&self) {
        crate::sync::Fences.rmb()
    }

    /// Full barrier toward the peer (Linux `mb`/`dsb(sy)`; `dsb sy` on a Pi). Default:
    /// `fence(SeqCst)`. Must be at least that strong.
    fn mb(&self) {
        crate::sync::Fences.mb()
    }

    /// Before a receive: write back and invalidate the `len` bytes at `addr` so that no dirty line
    /// can be evicted over the data the peer is about to DMA in (Linux's
    /// `dma_map_sg(DMA_FROM_DEVICE)`). The core passes only whole cache lines it owns exclusively
    /// (partial head/tail lines go through fragments, docs/protocols/vchiq.md §5). Default:
    /// [`Platform::dma_clean`] then [`Platform::dma_invalidate`] of the same range.
    fn dma_clean_invalidate(&self, addr: usize, len: usize) {
        self.dma_clean(addr, len);
        self.dma_invalidate(addr, len);
    }

    /// Write back `len` bytes at `addr` before the peer reads them (no-op on coherent memory).
    fn dma_clean(&self, addr: usize, len: usize) {
        let _ = (addr, len);
    }

    /// Invalidate `len` bytes at `addr` after the peer wrote them (and, through the default
    /// [`Platform::dma_clean_invalidate`], before the transfer). The core only ever passes whole
    /// cache lines it owns exclusively (partial lines go through fragments,
    /// docs/protocols/vchiq.md §5).
    fn dma_invalidate(&self, addr: usize, len: usize) {
        let _ = (addr, len);
    }
}

/// The protocol's barriers are the platform's.
impl Barriers for dyn Platform {
    fn wmb(&self) {
        Platform::wmb(self)
    }
    fn rmb(&self) {
        Platform::rmb(self)
    }
    fn mb(&self) {
        Platform::mb(self)
    }
}
