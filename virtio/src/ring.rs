//! A split virtqueue (virtio 1.x §2.7) driven through virtio-drivers' [`Hal`] and `Transport`,
//! hardened against a hostile device.
//!
//! Why not `virtio_drivers::queue::VirtQueue`: its `pop_used(token)` recycles whichever descriptor
//! chain the device names, so a used entry naming a chain that is not in flight (a duplicate, or
//! garbage) can neither be popped safely (it walks and frees descriptors we did not post, and can
//! panic on a stale `NEXT` flag) nor skipped (there is no skip): the queue wedges. `peek_used`
//! also truncates the 32-bit used id to `u16` before anyone can range-check it, and `pop_used`
//! returns the device's used length unclamped. This ring keeps the same memory layout and barrier
//! discipline but hands every used element to the caller *raw* (`id: u32`, `len: u32`), leaves
//! descriptor ownership to the caller (SCMI uses a fixed descriptor pair per message slot, so no
//! free list exists that the device could corrupt), and bounds the used-index advance by the ring
//! size.
//!
//! Layout (modern, two DMA regions like `VirtQueue::allocate_flexible`): descriptor table +
//! available ring (driver → device), used ring (device → driver).
//!
//! Notification suppression (virtio 1.x §2.7.7, §2.7.10): without `VIRTIO_F_RING_EVENT_IDX` the
//! device's `used.flags` word (`VIRTQ_USED_F_NO_NOTIFY`) decides whether we kick. With it, the
//! device publishes `avail_event` (after the used ring) and we kick only if the avail index moved
//! past it since the previous kick decision (`SplitRing::should_notify`, which handles any
//! number of `SplitRing::post`s between two decisions); in the other direction we publish
//! `used_event` (after the available ring) = the next used index we have not consumed, so the
//! device interrupts once per drain (`SplitRing::pop_used` re-arms it, with the re-check that
//! closes the race). Every comparison is [`vring_need_event`], wrap-safe in u16 arithmetic
//! (virtio-drivers' `should_notify` compares `avail_idx >= avail_event + 1` without wrapping and
//! misses kicks across the u16 wrap).

use core::marker::PhantomData;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};

use static_assertions::const_assert_eq;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Descriptor flag: the chain continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable.
pub const DESC_F_WRITE: u16 = 2;
/// Used ring flag: the device asks not to be notified (`VIRTQ_USED_F_NO_NOTIFY`).
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Available ring flag: the driver asks not to be interrupted (`VIRTQ_AVAIL_F_NO_INTERRUPT`).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// The virtio spec's `vring_need_event` (§2.7.10.1, Linux `include/uapi/linux/virtio_ring.h`):
/// whether the other side, which asked to be notified once index `event` is published, must be
/// notified now that the index moved from `old` to `new`. True iff `event` lies in the half-open
/// window `[old, new)` modulo 2^16, i.e. `(u16)(new - event - 1) < (u16)(new - old)`; correct
/// across the u16 wrap and for batches (`new - old` > 1). `old == new` never notifies.
#[inline]
pub const fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One descriptor of the table (virtio 1.x §2.7.5), little-endian on the wire.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Descriptor {
    /// Guest-physical address of the buffer.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// `DESC_F_*`.
    pub flags: u16,
    /// Next descriptor when `DESC_F_NEXT` is set.
    pub next: u16,
}
const_assert_eq!(size_of::<Descriptor>(), 16);
const_assert_eq!(offset_of!(Descriptor, len), 8);
const_assert_eq!(offset_of!(Descriptor, flags), 12);
const_assert_eq!(offset_of!(Descriptor, next), 14);

/// One used-ring element (virtio 1.x §2.7.8): the head of the returned chain and the bytes the
/// device says it wrote. Both are device-controlled and untrusted.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct UsedElem {
    /// Head descriptor index of the chain (untrusted: may be anything).
    pub id: u32,
    /// Bytes written into the device-writable part (untrusted).
    pub len: u32,
}
const_assert_eq!(size_of::<UsedElem>(), 8);
const_assert_eq!(offset_of!(UsedElem, len), 4);

/// Byte offsets within the rings, for a queue of `size` entries.
#[derive(Debug, Clone, Copy)]
pub struct RingLayout {
    /// Entries.
    pub size: u16,
    /// Offset of the available ring in the driver region (= descriptor table size).
    pub avail_off: usize,
    /// Bytes of the driver region (descriptors + avail ring incl. `used_event`).
    pub driver_bytes: usize,
    /// Bytes of the device region (used ring incl. `avail_event`).
    pub device_bytes: usize,
}

impl RingLayout {
    /// Layout for `size` entries (`size` must be a non-zero power of two).
    pub const fn new(size: u16) -> Self {
        let s = size as usize;
        let desc = 16 * s;
        let avail = 2 * (3 + s);
        let used = 2 * 3 + 8 * s;
        RingLayout {
            size,
            avail_off: desc,
            driver_bytes: desc + avail,
            device_bytes: used,
        }
    }
    /// Offset of `avail.flags` from the start of the driver area (the available ring).
    pub const fn avail_flags(&self) -> usize {
        0
    }
    /// Offset of `avail.idx` from the start of the driver area (the available ring).
    pub const fn avail_idx(&self) -> usize {
        2
    }
    /// Offset of `avail.ring[i]` from the start of the driver area.
    pub const fn avail_ring(&self, i: u16) -> usize {
        4 + 2 * (i as usize)
    }
    /// Offset of `used_event` (after `avail.ring[size]`) from the start of the driver area.
    pub const fn used_event(&self) -> usize {
        4 + 2 * (self.size as usize)
    }
    /// Offset of `used.flags` from the start of the device area (the used ring).
    pub const fn used_flags(&self) -> usize {
        0
    }
    /// Offset of `used.idx`.
    pub const fn used_idx(&self) -> usize {
        2
    }
    /// Offset of `used.ring[i]`.
    pub const fn used_ring(&self, i: u16) -> usize {
        4 + 8 * (i as usize)
    }
    /// Offset of `avail_event` (after `used.ring[size]`) from the start of the device area.
    pub const fn avail_event(&self) -> usize {
        4 + 8 * (self.size as usize)
    }
}

/// Page-granular DMA memory from the [`Hal`], freed on drop.
pub struct DmaRegion<H: Hal> {
    paddr: PhysAddr,
    vaddr: NonNull<u8>,
    pages: usize,
    _hal: PhantomData<H>,
}

// SAFETY: the region is plain memory owned by this value; accesses go through raw pointers whose
// synchronisation (atomics for the ring indices, fences) is done by the users of the region.
unsafe impl<H: Hal> Send for DmaRegion<H> {}
// SAFETY: `&DmaRegion` hands out only addresses; see `Send`.
unsafe impl<H: Hal> Sync for DmaRegion<H> {}

impl<H: Hal> DmaRegion<H> {
    /// At least `bytes` of zeroed DMA memory (whole pages) from the [`Hal`]; `None` if it fails.
    pub fn new(bytes: usize, dir: BufferDirection) -> Option<Self> {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let (paddr, vaddr) = H::dma_alloc(pages, dir);
        // virtio-drivers' own convention: physical address 0 means the allocation failed.
        if paddr == 0 {
            return None;
        }
        // The Hal contract says the pages are zeroed; a ring must start zeroed, so make sure.
        // SAFETY: `dma_alloc` returned `pages` pages at `vaddr`, owned by us and aliased by
        // nothing (Hal implementation safety); nobody else has the address yet.
        unsafe { core::ptr::write_bytes(vaddr.as_ptr(), 0, pages * PAGE_SIZE) };
        Some(DmaRegion {
            paddr,
            vaddr,
            pages,
            _hal: PhantomData,
        })
    }

    /// The region's physical (device-visible) address.
    pub fn paddr(&self) -> PhysAddr {
        self.paddr
    }

    /// Zero the whole region. The device must not be accessing it (reset).
    pub fn zero(&mut self) {
        // SAFETY: our allocation of `pages` pages; the device was reset so nothing else
        // accesses it.
        unsafe { core::ptr::write_bytes(self.vaddr.as_ptr(), 0, self.pages * PAGE_SIZE) };
    }

    /// Bytes in the region (whole pages).
    pub fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Whether the region is empty (never: at least one page).
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// The CPU address of byte `off`, or `None` past the end. Memory shared with the device:
    /// reach it through `fwipc_transport_api::shared_mem`, never through a reference.
    pub fn at(&self, off: usize) -> Option<*mut u8> {
        (off < self.len()).then(|| self.ptr(off))
    }

    fn ptr(&self, off: usize) -> *mut u8 {
        debug_assert!(off < self.pages * PAGE_SIZE);
        // Offsets are computed from `RingLayout`, which stays inside the allocation.
        self.vaddr.as_ptr().wrapping_add(off)
    }
}

impl<H: Hal> Drop for DmaRegion<H> {
    fn drop(&mut self) {
        // SAFETY: allocated by `dma_alloc` in `new` with these values and not yet freed; the
        // device no longer accesses it (the owner resets the device or unsets the queue first).
        let r = unsafe { H::dma_dealloc(self.paddr, self.vaddr, self.pages) };
        if r != 0 {
            log::error!("dma_dealloc failed ({r}) for {} pages", self.pages);
        }
    }
}

/// Why a used ring could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The device moved `used.idx` forward by more than the ring size: older entries were
    /// overwritten. The ring resynchronises to the newest `size` entries, which can still be
    /// popped; completions among the overwritten ones are lost (their transfers time out and
    /// stay quarantined until a reset).
    IndexJump {
        /// Entries the device claimed.
        claimed: u16,
    },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::IndexJump { claimed } => {
                write!(
                    f,
                    "device advanced used.idx by {claimed}, more than the ring holds"
                )
            }
        }
    }
}

impl core::error::Error for RingError {}

/// One split virtqueue. Not synchronised: the owner serialises access (it lives under the
/// channel lock).
pub struct SplitRing<H: Hal> {
    layout: RingLayout,
    driver: DmaRegion<H>,
    device: DmaRegion<H>,
    /// Our trusted copy of `avail.idx` (the device can write the shared one).
    avail_idx: u16,
    /// Next used index to consume.
    last_used: u16,
    /// `VIRTIO_F_RING_EVENT_IDX` negotiated: use `avail_event`/`used_event`.
    event_idx: bool,
    /// `avail_idx` at the previous kick decision (`old` of [`vring_need_event`]).
    kick_old: u16,
    /// [`SplitRing::suppress_interrupts`] was called: an empty drain does not re-arm
    /// `used_event`.
    no_interrupts: bool,
    /// Between [`SplitRing::pause_interrupts`] and [`SplitRing::resume_interrupts`]: as
    /// `no_interrupts`, for now.
    paused: bool,
}

impl<H: Hal> SplitRing<H> {
    /// Allocate the rings for `size` entries (a power of two ≥ 1). `None` if the Hal fails.
    /// `event_idx`: `VIRTIO_F_RING_EVENT_IDX` was negotiated.
    pub fn new(size: u16, event_idx: bool) -> Option<Self> {
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let layout = RingLayout::new(size);
        let driver = DmaRegion::new(layout.driver_bytes, BufferDirection::DriverToDevice)?;
        let device = DmaRegion::new(layout.device_bytes, BufferDirection::DeviceToDriver)?;
        Some(SplitRing {
            layout,
            driver,
            device,
            avail_idx: 0,
            last_used: 0,
            event_idx,
            kick_old: 0,
            no_interrupts: false,
            paused: false,
        })
    }

    /// Back to the just-allocated state, for re-initialisation after a device reset (no
    /// allocation). The device must be reset (not accessing the rings). A queue whose
    /// interrupts were suppressed ([`SplitRing::suppress_interrupts`]) stays so: how the driver
    /// takes the queue's completions is its own choice, not the device's state, so the request
    /// is written again into the zeroed ring.
    pub fn reset(&mut self) {
        self.driver.zero();
        self.device.zero();
        self.avail_idx = 0;
        self.last_used = 0;
        self.kick_old = 0;
        // The zeroed rings ask for every interrupt: a pause ends with the reset.
        self.paused = false;
        if self.no_interrupts {
            self.suppress_interrupts();
        }
    }

    /// Ask the device not to interrupt for this queue's used elements, for a queue whose
    /// completions the driver takes when it needs them (a transmit queue reclaimed lazily, as
    /// Linux's `virtio_rpmsg_bus` does with `virtqueue_disable_cb`): `VIRTQ_AVAIL_F_NO_INTERRUPT`
    /// in `avail.flags`, and with `EVENT_IDX` `used_event` one behind the next element (so at
    /// most one interrupt per wrap of the 16-bit index), no longer re-armed by an empty
    /// [`SplitRing::pop_used`] (virtio 1.2 §2.7.7, §2.7.10). A hint: the device may interrupt
    /// anyway.
    pub fn suppress_interrupts(&mut self) {
        self.no_interrupts = true;
        self.ask_for_no_interrupts();
    }

    /// Ask the device for no interrupts for now, while the driver looks at the used ring itself
    /// (a caller spinning on a reply; Linux's `virtqueue_disable_cb`): `avail.flags` and
    /// `used_event` as [`SplitRing::suppress_interrupts`] writes them, until
    /// [`SplitRing::resume_interrupts`]. A hint: the device may interrupt anyway. Nothing for a
    /// queue whose interrupts are suppressed for good, or already paused.
    pub fn pause_interrupts(&mut self) {
        if self.no_interrupts || self.paused {
            return;
        }
        self.paused = true;
        self.ask_for_no_interrupts();
    }

    /// Ask for interrupts again after [`SplitRing::pause_interrupts`] (Linux's
    /// `virtqueue_enable_cb`): `VIRTQ_AVAIL_F_NO_INTERRUPT` cleared and, with `EVENT_IDX`,
    /// `used_event` = the next element; then a full fence and a look at `used.idx`. Returns
    /// whether used elements are waiting: the device may have published them while it was asked
    /// for no interrupt, and none may come for them, so the caller drains them. Without a pause
    /// to end, only the look.
    pub fn resume_interrupts(&mut self) -> bool {
        if self.paused {
            self.paused = false;
            // Release (both): as in `ask_for_no_interrupts`.
            self.avail_flags_atomic().store(0, Ordering::Release);
            if self.event_idx {
                self.used_event_atomic()
                    .store(self.last_used.to_le(), Ordering::Release);
            }
            // SeqCst fence: the request for interrupts is visible before we read `used.idx`
            // (store → load, paired with the device's fence between its `used.idx` store and its
            // read of `used_event` / `avail.flags`): either the device sees the request and
            // interrupts for its next element, or we see that element here.
            fence(Ordering::SeqCst);
        }
        self.has_used()
    }

    /// `VIRTQ_AVAIL_F_NO_INTERRUPT` set, and `used_event` one behind the next element.
    fn ask_for_no_interrupts(&mut self) {
        // Release (both): nothing rides on them but they must not be reordered before earlier
        // ring writes the device may read together with them; the device reads them as hints.
        self.avail_flags_atomic()
            .store(AVAIL_F_NO_INTERRUPT.to_le(), Ordering::Release);
        self.used_event_atomic()
            .store(self.last_used.wrapping_sub(1).to_le(), Ordering::Release);
    }

    /// `avail.flags`, as an atomic.
    fn avail_flags_atomic(&self) -> &AtomicU16 {
        // SAFETY: as `avail_idx_atomic`, for `avail.flags` (offset 0, 2-byte aligned) in the
        // driver region; all accesses to it are atomic.
        unsafe {
            &*(self
                .driver
                .ptr(self.layout.avail_off + self.layout.avail_flags())
                as *const AtomicU16)
        }
    }

    /// Entries in the ring.
    pub fn size(&self) -> u16 {
        self.layout.size
    }

    /// (descriptor table, driver area, device area) physical addresses for `queue_set`.
    pub fn addrs(&self) -> (PhysAddr, PhysAddr, PhysAddr) {
        let d = self.driver.paddr();
        (d, d + self.layout.avail_off as u64, self.device.paddr())
    }

    /// Write descriptor `i` (the caller owns it: it is not part of a posted chain).
    pub fn set_desc(&mut self, i: u16, d: Descriptor) {
        if i >= self.layout.size {
            log::error!("descriptor {i} out of range");
            return;
        }
        let p = self.driver.ptr(16 * i as usize);
        // SAFETY: `i < size`, so the descriptor lies inside the driver region, which is 16-byte
        // aligned (page aligned base, 16-byte entries), so each field is aligned for its atomic;
        // the device does not read descriptor `i` because the caller has not posted (or has got
        // back) the chain containing it. Atomics, not references or plain stores: the memory is
        // shared with a device that could write it anyway (in-place `Hal`), and a racing write
        // must not be undefined behaviour (docs/reliability.md, "Invariants" item 1).
        let (lo, hi, len, flags, next) = unsafe {
            (
                AtomicU32::from_ptr(p as *mut u32),
                AtomicU32::from_ptr(p.wrapping_add(4) as *mut u32),
                AtomicU32::from_ptr(p.wrapping_add(8) as *mut u32),
                AtomicU16::from_ptr(p.wrapping_add(12) as *mut u16),
                AtomicU16::from_ptr(p.wrapping_add(14) as *mut u16),
            )
        };
        // A field that already holds its value is not stored again. A driver with fixed
        // descriptors per message rewrites the same values on every post, and a store takes the
        // line from the device's cache even when the value is the same, so the device's next read
        // of the chain waited for the line to come back (docs/benchmarks/changes.md, "Ring
        // stores only of what changed"). The memory holds the value either way; a device that
        // rewrites a field after this look could as well have done so after a store.
        // Relaxed (all): published to the device by the Release fence and store in `post`.
        store_if_changed32(lo, (d.addr as u32).to_le());
        store_if_changed32(hi, ((d.addr >> 32) as u32).to_le());
        store_if_changed32(len, d.len.to_le());
        store_if_changed16(flags, d.flags.to_le());
        store_if_changed16(next, d.next.to_le());
    }

    /// Make the chain starting at `head` available to the device.
    pub fn post(&mut self, head: u16) {
        let slot = self.avail_idx & (self.layout.size - 1);
        let p = self
            .driver
            .ptr(self.layout.avail_off + self.layout.avail_ring(slot)) as *mut u16;
        // SAFETY: in bounds (slot < size), 2-byte aligned; the device only reads ring entries
        // below `avail.idx`, which we have not advanced over this slot yet. Atomic for the same
        // reason as in `set_desc`.
        let entry = unsafe { AtomicU16::from_ptr(p) };
        // Relaxed: published by the Release fence and store below. Not stored again when the
        // entry already names `head` (as `set_desc`: a ring that posts the same heads in turn).
        store_if_changed16(entry, head.to_le());
        // Release fence: the descriptors and the ring entry above must be visible to the device
        // before it can observe the new `avail.idx` (virtio §2.7.13.3.1 write barrier).
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // Release (with the fence above, belt and braces): the device's Acquire load of
        // `avail.idx` then sees the entry and the descriptors.
        self.avail_idx_atomic()
            .store(self.avail_idx.to_le(), Ordering::Release);
    }

    fn avail_idx_atomic(&self) -> &AtomicU16 {
        // SAFETY: `avail.idx` is a 2-byte aligned u16 inside the driver region, which lives as
        // long as `self`; all accesses to it are atomic.
        unsafe {
            &*(self
                .driver
                .ptr(self.layout.avail_off + self.layout.avail_idx())
                as *const AtomicU16)
        }
    }

    fn used_idx_atomic(&self) -> &AtomicU16 {
        // SAFETY: as `avail_idx_atomic`, for `used.idx` in the device region.
        unsafe { &*(self.device.ptr(self.layout.used_idx()) as *const AtomicU16) }
    }

    fn used_flags_atomic(&self) -> &AtomicU16 {
        // SAFETY: as `avail_idx_atomic`, for `used.flags` in the device region.
        unsafe { &*(self.device.ptr(self.layout.used_flags()) as *const AtomicU16) }
    }

    fn used_event_atomic(&self) -> &AtomicU16 {
        // SAFETY: as `avail_idx_atomic`, for `used_event` (2-byte aligned, after the avail ring,
        // inside `driver_bytes`) in the driver region.
        unsafe {
            &*(self
                .driver
                .ptr(self.layout.avail_off + self.layout.used_event())
                as *const AtomicU16)
        }
    }

    fn avail_event_atomic(&self) -> &AtomicU16 {
        // SAFETY: as `avail_idx_atomic`, for `avail_event` (2-byte aligned, after the used ring,
        // inside `device_bytes`) in the device region.
        unsafe { &*(self.device.ptr(self.layout.avail_event()) as *const AtomicU16) }
    }

    /// The device's used index right now (for a cheap "anything new?" check).
    pub fn device_used_idx(&self) -> u16 {
        // Acquire: pairs with the device's Release store of `used.idx`, so the used elements and
        // buffer contents it wrote before are visible to us.
        u16::from_le(self.used_idx_atomic().load(Ordering::Acquire))
    }

    /// Next used index to consume.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// Whether used entries are waiting.
    pub fn has_used(&self) -> bool {
        self.device_used_idx() != self.last_used
    }

    /// The next used element, raw. `Ok(None)` when there is none. An index jump larger than the
    /// ring is reported once and the ring resynchronises.
    pub fn pop_used(&mut self) -> Result<Option<UsedElem>, RingError> {
        let mut dev = self.device_used_idx();
        if dev == self.last_used && self.event_idx && !self.no_interrupts && !self.paused {
            // Empty: re-arm the interrupt for the next entry (used_event = the index we consume
            // next), then look again. Release store: publishes our consumption of the entries
            // before it. SeqCst fence: the store must be visible before we re-read `used.idx`
            // (store → load ordering, paired with the device's fence between its `used.idx` store
            // and its `used_event` load), or an entry added in between is never signalled and
            // never seen (virtio §2.7.10 "the driver MUST ... re-check").
            self.used_event_atomic()
                .store(self.last_used.to_le(), Ordering::Release);
            fence(Ordering::SeqCst);
            dev = self.device_used_idx();
        }
        let pending = dev.wrapping_sub(self.last_used);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.layout.size {
            // More entries than the ring holds: the older ones were overwritten. Keep the newest
            // `size` (still intact in the ring) and report the jump once.
            self.last_used = dev.wrapping_sub(self.layout.size);
            return Err(RingError::IndexJump { claimed: pending });
        }
        let slot = self.last_used & (self.layout.size - 1);
        let p = self.device.ptr(self.layout.used_ring(slot));
        // SAFETY: in bounds (slot < size), 4-byte aligned (the used ring is, and an element is 8
        // bytes); the device-written ring words are only ever accessed as atomics of their own
        // width by the driver (docs/memory-ordering.md, "backend-scmi-virtio"), so a device that
        // rewrites the element while we read it yields a stale or new value, never a data race.
        let (id, len) = unsafe {
            (
                AtomicU32::from_ptr(p as *mut u32),
                AtomicU32::from_ptr(p.wrapping_add(4) as *mut u32),
            )
        };
        // Relaxed (both): the Acquire load of `used.idx` above ordered the device's element
        // write before these reads.
        let e = UsedElem {
            id: u32::from_le(id.load(Ordering::Relaxed)),
            len: u32::from_le(len.load(Ordering::Relaxed)),
        };
        self.last_used = self.last_used.wrapping_add(1);
        Ok(Some(e))
    }

    /// For a drain that stopped at its budget with elements still waiting: with `EVENT_IDX`, ask
    /// the device to interrupt for the next element it publishes (`used_event` = its current
    /// `used.idx`), so the backlog is picked up by the next interrupt instead of never (the
    /// `used_event` left behind by the last empty drain names an index the device has already
    /// passed, and [`vring_need_event`] never matches it again). Without `EVENT_IDX` every
    /// element interrupts anyway. An element published between the read and the store is not
    /// signalled; the one after it is.
    pub fn arm_for_next_used(&mut self) {
        // A queue whose interrupts are suppressed stays so ([`SplitRing::suppress_interrupts`]).
        if !self.event_idx || self.no_interrupts || self.paused {
            return;
        }
        let dev = self.device_used_idx();
        // Release: publishes our consumption up to `last_used` with the new event index. SeqCst
        // fence: as in `pop_used`, the store is visible before any later re-read of `used.idx`.
        self.used_event_atomic()
            .store(dev.to_le(), Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// The kick decision after one or more [`SplitRing::post`]s: whether the device wants a
    /// notification for the buffers made available since the previous call. With `EVENT_IDX`:
    /// [`vring_need_event`]`(avail_event, avail_idx, avail_idx at the previous call)`, so a batch
    /// of posts is one decision and the u16 wrap is handled; without: the `NO_NOTIFY` flag word.
    /// Call it once per batch and kick when it returns true.
    pub fn should_notify(&mut self) -> bool {
        // Full fence: our `avail.idx` store must be ordered before reading the device's
        // `avail_event`/flags, or we could miss a notification the device asks for after reading
        // the old index (virtio §2.7.13.4 "the driver MUST perform a suitable memory barrier
        // before reading"); pairs with the device's fence between writing `avail_event` and
        // re-reading `avail.idx`.
        fence(Ordering::SeqCst);
        let (new, old) = (self.avail_idx, self.kick_old);
        self.kick_old = new;
        if self.event_idx {
            // Acquire: pairs with the device's store of `avail_event` (a hint; no data rides on
            // it, the fence above does the ordering that matters).
            let event = u16::from_le(self.avail_event_atomic().load(Ordering::Acquire));
            vring_need_event(event, new, old)
        } else {
            // Acquire: as above, for the flag word.
            u16::from_le(self.used_flags_atomic().load(Ordering::Acquire)) & USED_F_NO_NOTIFY == 0
        }
    }
}

/// Store `v` into `a` unless it holds `v` already (Relaxed both: the caller publishes with a
/// later Release). See `SplitRing::set_desc` for why.
#[inline]
fn store_if_changed32(a: &AtomicU32, v: u32) {
    if a.load(Ordering::Relaxed) != v {
        a.store(v, Ordering::Relaxed);
    }
}

/// [`store_if_changed32`] for a 16-bit field.
#[inline]
fn store_if_changed16(a: &AtomicU16, v: u16) {
    if a.load(Ordering::Relaxed) != v {
        a.store(v, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: the other side asked to hear about index `event`; the indices published since
    /// the last decision are `old, old + 1, ..., new - 1` (mod 2^16). Notify iff `event` is
    /// among them. Enumerated, no clever arithmetic.
    fn model_need_event(event: u16, new: u16, old: u16) -> bool {
        let mut i = old;
        while i != new {
            if i == event {
                return true;
            }
            i = i.wrapping_add(1);
        }
        false
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Arbitrary triples (any wrap, any batch size up to a whole u16 window).
        #[test]
        fn need_event_matches_model(event: u16, new: u16, old: u16) {
            prop_assert_eq!(vring_need_event(event, new, old), model_need_event(event, new, old));
        }

        /// Small batches straddling the u16 wrap, the case that matters in practice.
        #[test]
        fn need_event_matches_model_near_wrap(
            start in 65_000u16..=u16::MAX,
            batch in 0u16..600,
            ev in 0u16..1200,
        ) {
            let old = start;
            let new = old.wrapping_add(batch);
            let event = old.wrapping_sub(300).wrapping_add(ev);
            prop_assert_eq!(vring_need_event(event, new, old), model_need_event(event, new, old));
        }
    }

    /// Every single-step decision (batch of one) over the whole u16 range, for events just
    /// behind, at, and ahead of the new entry: exhaustive across the wrap.
    #[test]
    fn need_event_exhaustive_single_steps() {
        for old in 0..=u16::MAX {
            let new = old.wrapping_add(1);
            for d in [-2i32, -1, 0, 1, 2] {
                let event = (i32::from(old) + d).rem_euclid(65_536) as u16;
                assert_eq!(
                    vring_need_event(event, new, old),
                    model_need_event(event, new, old),
                    "event {event} new {new} old {old}"
                );
            }
        }
    }

    /// The non-wrapping comparison virtio-drivers 0.13 uses (`avail_idx >= avail_event + 1`)
    /// misses this kick: the device asked for index 65534, the batch published 65530..=1.
    #[test]
    fn naive_compare_misses_kick_across_wrap() {
        let (event, old, new) = (65_534u16, 65_530u16, 2u16);
        assert!(model_need_event(event, new, old));
        assert!(vring_need_event(event, new, old));
        let naive = new >= event.wrapping_add(1);
        assert!(!naive, "the naive check would have missed it");
    }

    #[test]
    fn event_offsets() {
        let l = RingLayout::new(256);
        assert_eq!(l.used_event(), 4 + 2 * 256);
        assert_eq!(l.avail_off + l.used_event() + 2, l.driver_bytes);
        assert_eq!(l.avail_event(), 4 + 8 * 256);
        assert_eq!(l.avail_event() + 2, l.device_bytes);
    }

    #[test]
    fn layout_matches_spec_sizes() {
        let l = RingLayout::new(256);
        assert_eq!(l.avail_off, 4096);
        assert_eq!(l.driver_bytes, 4096 + 2 * 259);
        assert_eq!(l.device_bytes, 6 + 8 * 256);
        assert_eq!(l.avail_ring(3), 4 + 6);
        assert_eq!(l.used_ring(2), 4 + 16);
    }
}

/// loom models of the two EVENT_IDX store→fence→load handshakes (virtio §2.7.10), with the ring
/// words as loom atomics and the same orderings as [`SplitRing::post`] /
/// [`SplitRing::should_notify`] / [`SplitRing::pop_used`] and the simulated device's
/// `next_avail` / `push_used`, the decisions made by the real [`vring_need_event`], and indices
/// starting just below the u16 wrap. The property is liveness at the end: a side that skipped a
/// notification must be one the other side is guaranteed to re-check. Removing either
/// `fence(SeqCst)` makes loom find the lost kick / lost interrupt. (A model, not the ring code
/// itself: the ring's words are views of DMA memory, which loom cannot track.)
/// `RUSTFLAGS="--cfg loom" cargo test -p fwipc-virtio --features ring --release --lib loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::vring_need_event;
    use loom::sync::atomic::{fence, AtomicBool, AtomicU16, AtomicU32, Ordering};
    use loom::sync::Arc;

    const START: u16 = u16::MAX - 1;
    const POSTS: u16 = 3;

    /// The event-suppression handshake, which virtio uses in both directions: a producer
    /// publishes `POSTS` index advances, fences, reads the consumer's event index and signals only
    /// when `vring_need_event` says so; the consumer handles each new signal by consuming until
    /// empty, then publishes its event index, fences and re-checks. Every advance must be
    /// consumed. `lost` names the signal in the failure message.
    fn no_lost_signal_across_wrap(lost: &'static str) {
        loom::model(move || {
            let idx = Arc::new(AtomicU16::new(START));
            let event = Arc::new(AtomicU16::new(START));
            // The doorbell / interrupt line: a count of signals (each new one is handled).
            let signals = Arc::new(AtomicU32::new(0));
            let done = Arc::new(AtomicBool::new(false));
            let consumer = {
                let (idx, event, signals, done) =
                    (idx.clone(), event.clone(), signals.clone(), done.clone());
                loom::thread::spawn(move || {
                    let (mut last, mut handled) = (START, 0);
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        let k = signals.load(Ordering::Acquire);
                        if k != handled {
                            handled = k;
                            loop {
                                // Consume, then publish the event index and re-check.
                                let now = idx.load(Ordering::Acquire);
                                if now != last {
                                    last = now;
                                    continue;
                                }
                                event.store(last, Ordering::Release);
                                fence(Ordering::SeqCst);
                                if idx.load(Ordering::Acquire) == last {
                                    break;
                                }
                            }
                        } else if finished {
                            return last;
                        } else {
                            loom::thread::yield_now();
                        }
                    }
                })
            };
            let mut cur = START;
            for _ in 0..POSTS {
                // Publish, fence, read the event index, signal if asked (one decision per post).
                let old = cur;
                cur = cur.wrapping_add(1);
                idx.store(cur, Ordering::Release);
                fence(Ordering::SeqCst);
                let ev = event.load(Ordering::Acquire);
                if vring_need_event(ev, cur, old) {
                    signals.fetch_add(1, Ordering::Release);
                }
            }
            done.store(true, Ordering::Release);
            let consumed = consumer.join().unwrap();
            assert_eq!(consumed, START.wrapping_add(POSTS), "{lost} was lost");
        });
    }

    /// Driver → device: `post` + `should_notify` against `avail_event`; the kick-only device's
    /// `next_avail` consumes, publishes `avail_event` and re-checks.
    #[test]
    fn loom_no_lost_kick_across_wrap() {
        no_lost_signal_across_wrap("a kick");
    }

    /// Device → driver: `push_used` against `used_event`; the driver's interrupt handler drains
    /// with `pop_used`, re-arms `used_event`, fences and re-checks.
    #[test]
    fn loom_no_lost_interrupt_across_wrap() {
        no_lost_signal_across_wrap("an interrupt");
    }
}
