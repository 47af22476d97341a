//! A simulated bus behind per-context-bank SMMUs: regions are allocated at increasing IOVAs and
//! registered per stream id; the DSP reaches memory only through [`SimBus::read`] /
//! [`SimBus::write`] with a bus address (`iova | sid << 32`), so an access to memory the AP has
//! released is a detected fault, not silent corruption. The DSP's accesses for one call go
//! through a [`BusWindow`], which translates the call's payload region once and checks every
//! access against it as the bus does.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::mem::{read_at, write_at, DmaHal, DmaRegion};
use crate::wire::PAGE_SIZE;

/// AP virtual addresses of simulated regions are `VA_BASE + iova` (page-aligned, distinct
/// from the IOVA so a `pv`/page mix-up shows).
pub const VA_BASE: u64 = 0x7f00_0000_0000;
const IOVA_START: u64 = 0x1000_0000;

struct BusInner {
    next_iova: Mutex<u64>,
    /// The mapped regions' memory, by (sid, iova); an entry is removed when the AP drops its
    /// region ([`SimRegion`]'s `Drop`).
    maps: Mutex<BTreeMap<(u32, u64), Arc<SimMemory>>>,
    faults: AtomicU64,
}

/// The bytes of one simulated region. They are atomics: the AP (through `crate::mem`) and the
/// DSP thread (through [`SimBus::read`] / [`SimBus::write`], the same accessors) touch them
/// concurrently, with no lock, as the two sides do on hardware. Shared by the AP's
/// [`SimRegion`] and the bus (and, for the length of one call, a [`BusWindow`]), so the bytes
/// outlive the mapping by as long as a DSP access that started before the unmap.
struct SimMemory {
    iova: u64,
    /// Whole pages from a page boundary, as DMA memory is ([`DmaHal::alloc`]'s promise): where
    /// a call's words fall on cache lines is then the hardware's, whatever the heap did before
    /// (a heap block of bytes put the region at the allocator's 16-byte alignment, and how many
    /// lines a call's metadata and inline buffers touched moved with it, by two per round trip
    /// between two runs of one build: docs/benchmarks/changes.md, "FastRPC's simulated regions
    /// page-aligned, after all").
    data: Box<[Page]>,
    /// Cleared when the AP drops its region: from then on every DSP access faults.
    mapped: AtomicBool,
}

/// One page of a simulated region.
#[repr(C, align(4096))]
struct Page([AtomicU8; PAGE_SIZE as usize]);

impl SimMemory {
    /// A mapped region at `iova` of `size` zeroed bytes (a whole number of pages).
    fn new(iova: u64, size: u64) -> Self {
        let pages = size.div_ceil(PAGE_SIZE) as usize;
        SimMemory {
            iova,
            data: (0..pages)
                .map(|_| Page([const { AtomicU8::new(0) }; PAGE_SIZE as usize]))
                .collect(),
            mapped: AtomicBool::new(true),
        }
    }
}

// SAFETY: `as_ptr` points at `data`, `len()` bytes (its pages, contiguous: `Page` has no padding,
// its size is its alignment) owned by the memory for its whole life, never resized; `AtomicU8`
// has `u8`'s layout and is an `UnsafeCell`, so writing through a pointer derived from the
// pages' slice (which carries the whole allocation's provenance) is allowed; nothing here views
// `data` as plain bytes.
unsafe impl DmaRegion for SimMemory {
    fn iova(&self) -> u64 {
        self.iova
    }
    fn va(&self) -> u64 {
        VA_BASE + self.iova
    }
    fn len(&self) -> usize {
        self.data.len() * PAGE_SIZE as usize
    }
    fn as_ptr(&self) -> NonNull<u8> {
        NonNull::from(&self.data[..]).cast::<u8>()
    }
}

/// The region a [`BusWindow`] held, kept for the next window ([`SimBus::window_from`]). It keeps
/// the region's bytes (not its mapping) alive until it is replaced or dropped.
#[derive(Default)]
pub struct HeldRegion(Option<(u64, Arc<SimMemory>)>);

/// One simulated region as the AP holds it ([`DmaHal::alloc`]): mapped on the bus until the AP
/// drops it.
pub struct SimRegion {
    bus: Weak<BusInner>,
    sid: u32,
    mem: Arc<SimMemory>,
}

// SAFETY: every method is the region's memory's (`SimMemory`, above), which the region keeps
// alive with its `Arc`.
unsafe impl DmaRegion for SimRegion {
    fn iova(&self) -> u64 {
        self.mem.iova()
    }
    fn va(&self) -> u64 {
        self.mem.va()
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn as_ptr(&self) -> NonNull<u8> {
        self.mem.as_ptr()
    }
}

impl Drop for SimRegion {
    fn drop(&mut self) {
        // Relaxed: a flag that only turns DSP accesses into faults; the bytes stay valid for a
        // window still holding them (its `Arc`), so no data is published with it.
        self.mem.mapped.store(false, Ordering::Relaxed);
        if let Some(b) = self.bus.upgrade() {
            b.maps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(self.sid, self.mem.iova));
        }
    }
}

/// The simulated bus. Cheap to clone.
#[derive(Clone)]
pub struct SimBus {
    inner: Arc<BusInner>,
}

impl Default for SimBus {
    fn default() -> Self {
        Self::new()
    }
}

impl SimBus {
    /// An empty bus.
    pub fn new() -> Self {
        SimBus {
            inner: Arc::new(BusInner {
                next_iova: Mutex::new(IOVA_START),
                maps: Mutex::new(BTreeMap::new()),
                faults: AtomicU64::new(0),
            }),
        }
    }

    fn translate(&self, bus_addr: u64, len: usize) -> Option<(Arc<SimMemory>, usize)> {
        let sid = (bus_addr >> 32) as u32;
        let iova = bus_addr & 0xffff_ffff;
        let maps = self.inner.maps.lock().ok()?;
        let (_, r) = maps.range((sid, 0)..=(sid, iova)).next_back()?;
        let r = r.clone();
        drop(maps);
        let off = usize::try_from(iova - r.iova).ok()?;
        let end = off.checked_add(len)?;
        if end > r.len() {
            return None;
        }
        Some((r, off))
    }

    /// [`SimBus::window`], reusing the region an earlier window held ([`BusWindow::into_held`])
    /// when it still holds `bus_addr` and is still mapped: the next call on the same payload
    /// region opens its window without the bus's lock. Exact as a translation is: a region is
    /// mapped exactly while it is in the bus's map, regions never overlap and an IOVA is never
    /// given out twice, so the region found is the one a translation would find.
    pub fn window_from(&self, bus_addr: u64, keep: &mut HeldRegion) -> BusWindow<'_> {
        if let Some((base, r)) = keep.0.take() {
            let inside = bus_addr
                .checked_sub(base)
                .and_then(|o| usize::try_from(o).ok())
                .is_some_and(|o| o < r.len());
            // Relaxed: as in `BusWindow::access`.
            if inside && r.mapped.load(Ordering::Relaxed) {
                return BusWindow {
                    bus: self,
                    held: Some((base, r)),
                };
            }
        }
        self.window(bus_addr)
    }

    /// A view for the accesses of one DSP call, holding the region of `bus_addr` (the call's
    /// payload) translated once; see [`BusWindow`]. A window on an unmapped address holds
    /// nothing: each access is translated.
    pub fn window(&self, bus_addr: u64) -> BusWindow<'_> {
        BusWindow {
            bus: self,
            held: self
                .translate(bus_addr, 0)
                .map(|(r, _)| ((bus_addr & !0xffff_ffff) | r.iova, r)),
        }
    }

    /// DSP read through the SMMU; `false` (and a counted fault) if unmapped.
    pub fn read(&self, bus_addr: u64, out: &mut [u8]) -> bool {
        self.unheld().read(bus_addr, out)
    }

    /// DSP write through the SMMU; `false` (and a counted fault) if unmapped.
    pub fn write(&self, bus_addr: u64, data: &[u8]) -> bool {
        self.unheld().write(bus_addr, data)
    }

    /// Whether `[bus_addr, bus_addr+len)` is mapped.
    pub fn is_mapped(&self, bus_addr: u64, len: usize) -> bool {
        self.unheld().is_mapped(bus_addr, len)
    }

    /// A window holding no region: every access is translated on its own.
    fn unheld(&self) -> BusWindow<'_> {
        BusWindow {
            bus: self,
            held: None,
        }
    }

    /// Regions mapped right now.
    pub fn mapped_regions(&self) -> usize {
        self.inner.maps.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// DSP accesses that hit unmapped memory.
    pub fn faults(&self) -> u64 {
        // Relaxed: statistics counter.
        self.inner.faults.load(Ordering::Relaxed)
    }
}

impl DmaHal for SimBus {
    fn alloc(&self, sid: u32, size: usize) -> Option<Arc<dyn DmaRegion>> {
        let size = crate::wire::align_up(size.max(1) as u64, PAGE_SIZE)?;
        let iova = {
            let mut n = self.inner.next_iova.lock().ok()?;
            let iova = *n;
            // A guard page between regions; the 32-bit DMA mask bounds the space.
            let next = iova.checked_add(size + PAGE_SIZE)?;
            if next > 0xffff_ffff {
                return None;
            }
            *n = next;
            iova
        };
        let mem = Arc::new(SimMemory::new(iova, size));
        self.inner
            .maps
            .lock()
            .ok()?
            .insert((sid, iova), mem.clone());
        Some(Arc::new(SimRegion {
            bus: Arc::downgrade(&self.inner),
            sid,
            mem,
        }))
    }
}

/// The accesses of one DSP call, with one translation of the region the call's payload is in
/// (the bus's lock and a reference count taken once per call, not once per access). Every
/// access is checked as [`SimBus::read`] checks it: the range must lie inside a region that is
/// still mapped, or the access fails and counts a fault; the held region is unmapped as soon as
/// the AP drops it, as for any other access. Accesses outside the held region (buffers mapped on
/// their own) are translated one by one.
pub struct BusWindow<'a> {
    bus: &'a SimBus,
    /// The held region's memory and its bus address (`sid << 32 | iova`).
    held: Option<(u64, Arc<SimMemory>)>,
}

impl BusWindow<'_> {
    /// The region this window holds, for the next one ([`SimBus::window_from`]).
    pub fn into_held(self) -> HeldRegion {
        HeldRegion(self.held)
    }

    /// `f` on the memory and offset of `[bus_addr, bus_addr+len)`, if it is mapped.
    fn access<R>(
        &self,
        bus_addr: u64,
        len: usize,
        f: impl FnOnce(&SimMemory, usize) -> R,
    ) -> Option<R> {
        if let Some((base, r)) = &self.held {
            let off = bus_addr
                .checked_sub(*base)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|o| o.checked_add(len).is_some_and(|e| e <= r.len()));
            if let Some(off) = off {
                // Relaxed: see `SimRegion`'s `Drop`. An unmap concurrent with this access is
                // seen by the next one, as a concurrent unmap is by the next translation.
                return r.mapped.load(Ordering::Relaxed).then(|| f(r, off));
            }
        }
        let (r, off) = self.bus.translate(bus_addr, len)?;
        Some(f(&r, off))
    }

    fn fault(&self) -> bool {
        // Relaxed: statistics counter.
        self.bus.inner.faults.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// DSP read through the SMMU; `false` (and a counted fault) if unmapped.
    pub fn read(&self, bus_addr: u64, out: &mut [u8]) -> bool {
        // Bounds were checked by `access`; the copy uses the atomic byte accessors, so a
        // concurrent AP access is not a data race.
        self.access(bus_addr, out.len(), |r, off| read_at(r, off, out).is_ok())
            .unwrap_or(false)
            || self.fault()
    }

    /// DSP write through the SMMU; `false` (and a counted fault) if unmapped.
    pub fn write(&self, bus_addr: u64, data: &[u8]) -> bool {
        // As in `read`.
        self.access(bus_addr, data.len(), |r, off| {
            write_at(r, off, data).is_ok()
        })
        .unwrap_or(false)
            || self.fault()
    }

    /// Whether `[bus_addr, bus_addr+len)` is mapped.
    pub fn is_mapped(&self, bus_addr: u64, len: usize) -> bool {
        self.access(bus_addr, len, |_, _| ()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_after_drop_and_sid_checked() {
        let bus = SimBus::new();
        let r = bus.alloc(1, 100).unwrap();
        assert_eq!(r.len(), 4096);
        let a = r.iova() | 1 << 32;
        assert!(bus.write(a + 10, b"hi"));
        let mut b = [0u8; 2];
        assert!(bus.read(a + 10, &mut b));
        assert_eq!(&b, b"hi");
        assert!(!bus.read(r.iova() | 2 << 32, &mut b), "other context bank");
        assert!(!bus.read(a + 4095, &mut b), "crosses the end");
        drop(r);
        assert!(!bus.is_mapped(a, 1));
        assert_eq!(bus.faults(), 2);
    }

    #[test]
    fn a_kept_region_serves_a_window_only_where_a_translation_would() {
        let bus = SimBus::new();
        let r = bus.alloc(1, 100).unwrap();
        let other = bus.alloc(1, 100).unwrap();
        let a = r.iova() | 1 << 32;
        let o = other.iova() | 1 << 32;
        let mut keep = HeldRegion::default();
        let w = bus.window_from(a, &mut keep);
        assert!(w.write(a + 10, b"hi"));
        keep = w.into_held();
        // Another region: the window holds that one, and writes reach it.
        let w = bus.window_from(o, &mut keep);
        assert!(w.write(o, b"ok"));
        keep = w.into_held();
        let mut b = [0u8; 2];
        assert!(bus.read(o, &mut b));
        assert_eq!(&b, b"ok");
        assert!(bus.read(a + 10, &mut b));
        assert_eq!(&b, b"hi", "the first region kept its bytes");
        // The same IOVA in another context bank is not the kept region.
        let w = bus.window_from(other.iova() | 2 << 32, &mut keep);
        assert!(!w.is_mapped(other.iova() | 2 << 32, 1));
        keep = w.into_held();
        // The AP drops a kept region: the next window on it faults as the bus does.
        keep = bus.window_from(a, &mut keep).into_held();
        drop(r);
        let w = bus.window_from(a, &mut keep);
        assert!(!w.is_mapped(a, 1));
        assert!(!w.write(a + 10, b"hi"));
        assert!(
            w.write(o + 2, b"ok"),
            "another region, translated on its own"
        );
        assert_eq!(bus.faults(), 1);
    }

    #[test]
    fn a_window_checks_every_access_as_the_bus_does() {
        let bus = SimBus::new();
        let r = bus.alloc(1, 100).unwrap();
        let other = bus.alloc(1, 100).unwrap();
        let a = r.iova() | 1 << 32;
        let w = bus.window(a + 8);
        assert!(w.write(a + 10, b"hi"));
        let mut b = [0u8; 2];
        assert!(
            bus.read(a + 10, &mut b),
            "the window wrote the region itself"
        );
        assert_eq!(&b, b"hi");
        assert!(!w.read(a + 4095, &mut b), "crosses the end");
        assert!(!w.read(r.iova() | 2 << 32, &mut b), "other context bank");
        assert!(!w.is_mapped(a - 1, 1), "below the region");
        assert!(
            w.write(other.iova() | 1 << 32, b"ok"),
            "another region, translated on its own"
        );
        assert_eq!(bus.faults(), 2);
        // The AP releases the region while the window still holds it: unmapped, and every
        // access through the window a fault, as through the bus.
        drop(r);
        assert!(!w.is_mapped(a, 1));
        assert!(!w.write(a + 10, b"hi"));
        assert!(!bus.is_mapped(a, 1));
        assert_eq!(bus.faults(), 3);
        drop(w);
        assert_eq!(bus.mapped_regions(), 1, "only `other` is left");
    }

    #[test]
    fn a_window_on_an_unmapped_address_translates_each_access() {
        let bus = SimBus::new();
        let w = bus.window(0x1234 | 1 << 32);
        let r = bus.alloc(1, 100).unwrap();
        assert!(w.write(r.iova() | 1 << 32, b"late"));
        assert!(!w.read(0x1234 | 1 << 32, &mut [0u8; 1]));
        assert_eq!(bus.faults(), 1);
    }
}
