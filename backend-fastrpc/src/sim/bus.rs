//! A simulated bus behind per-context-bank SMMUs: regions are allocated at increasing IOVAs and
//! registered per stream id; the DSP reaches memory only through [`SimBus::read`] /
//! [`SimBus::write`] with a bus address (`iova | sid << 32`), so an access to memory the AP has
//! released is a detected fault, not silent corruption.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::mem::{read_at, write_at, zeroed_atomic_bytes, DmaHal, DmaRegion};
use crate::wire::PAGE_SIZE;

/// AP virtual addresses of simulated regions are `VA_BASE + iova` (page-aligned, distinct
/// from the IOVA so a `pv`/page mix-up shows).
pub const VA_BASE: u64 = 0x7f00_0000_0000;
const IOVA_START: u64 = 0x1000_0000;

struct BusInner {
    next_iova: Mutex<u64>,
    maps: Mutex<BTreeMap<(u32, u64), Weak<SimRegion>>>,
    faults: AtomicU64,
}

/// One simulated region. Its bytes are atomics: the AP (through `crate::mem`) and the DSP thread
/// (through [`SimBus::read`] / [`SimBus::write`], the same accessors) touch them concurrently,
/// with no lock, as the two sides do on hardware.
pub struct SimRegion {
    bus: Weak<BusInner>,
    sid: u32,
    iova: u64,
    data: Box<[AtomicU8]>,
}

// SAFETY: `as_ptr` points at `data`, `data.len()` bytes owned by the region for its whole life,
// never resized; `AtomicU8` has `u8`'s layout and is an `UnsafeCell`, so writing through a
// pointer derived from `&[AtomicU8]` is allowed; nothing here views `data` as plain bytes.
unsafe impl DmaRegion for SimRegion {
    fn iova(&self) -> u64 {
        self.iova
    }
    fn va(&self) -> u64 {
        VA_BASE + self.iova
    }
    fn len(&self) -> usize {
        self.data.len()
    }
    fn as_ptr(&self) -> NonNull<u8> {
        NonNull::from(&self.data[..]).cast::<u8>()
    }
}

impl Drop for SimRegion {
    fn drop(&mut self) {
        if let Some(b) = self.bus.upgrade() {
            b.maps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(self.sid, self.iova));
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

    fn translate(&self, bus_addr: u64, len: usize) -> Option<(Arc<SimRegion>, usize)> {
        let sid = (bus_addr >> 32) as u32;
        let iova = bus_addr & 0xffff_ffff;
        let maps = self.inner.maps.lock().ok()?;
        let (_, w) = maps.range((sid, 0)..=(sid, iova)).next_back()?;
        let r = w.upgrade()?;
        drop(maps);
        let off = usize::try_from(iova - r.iova).ok()?;
        let end = off.checked_add(len)?;
        if end > r.len() {
            return None;
        }
        Some((r, off))
    }

    fn fault(&self) -> bool {
        // Relaxed: statistics counter.
        self.inner.faults.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// DSP read through the SMMU; `false` (and a counted fault) if unmapped.
    pub fn read(&self, bus_addr: u64, out: &mut [u8]) -> bool {
        match self.translate(bus_addr, out.len()) {
            Some((r, off)) => {
                // Bounds were checked by `translate`; the copy uses the atomic byte accessors,
                // so a concurrent AP access is not a data race.
                read_at(&*r, off, out).is_ok() || self.fault()
            }
            None => self.fault(),
        }
    }

    /// DSP write through the SMMU; `false` (and a counted fault) if unmapped.
    pub fn write(&self, bus_addr: u64, data: &[u8]) -> bool {
        match self.translate(bus_addr, data.len()) {
            Some((r, off)) => {
                // As in `read`.
                write_at(&*r, off, data).is_ok() || self.fault()
            }
            None => self.fault(),
        }
    }

    /// Whether `[bus_addr, bus_addr+len)` is mapped.
    pub fn is_mapped(&self, bus_addr: u64, len: usize) -> bool {
        self.translate(bus_addr, len).is_some()
    }

    /// Regions mapped right now.
    pub fn mapped_regions(&self) -> usize {
        self.inner
            .maps
            .lock()
            .map(|m| m.values().filter(|w| w.strong_count() > 0).count())
            .unwrap_or(0)
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
        let r = Arc::new(SimRegion {
            bus: Arc::downgrade(&self.inner),
            sid,
            iova,
            data: zeroed_atomic_bytes(size as usize),
        });
        self.inner
            .maps
            .lock()
            .ok()?
            .insert((sid, iova), Arc::downgrade(&r));
        Some(r)
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
}
