//! Memory the DSP can reach: the HAL the embedder implements (allocate page-aligned, zeroed,
//! DSP-reachable memory on a session's context bank) and the shared-buffer handle (the dma-buf
//! role: memory handed to the DSP by handle instead of being copied).
//!
//! A region stays mapped for the DSP exactly as long as some `Arc` to it lives: the context of an
//! invoke that passed it holds one, so a timed-out call keeps the mapping until the DSP answers
//! or the session is torn down. Dropping the last reference unmaps (the HAL's `Drop`).

use alloc::sync::Arc;

use crate::error::{FastRpcError, Result};
use crate::wire::PAGE_SIZE;

/// One DSP-reachable memory region, page-aligned in both address spaces.
pub trait DmaRegion: Send + Sync {
    /// Bus address (IOVA on the session's context bank, below 2^32) of byte 0.
    fn iova(&self) -> u64;
    /// AP virtual address of byte 0 (what `pv` fields are computed from).
    fn va(&self) -> u64;
    /// Size in bytes (a page multiple).
    fn len(&self) -> usize;
    /// Whether the region is empty (never, for a real allocation).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Run `f` over the region's bytes. The HAL provides whatever cache maintenance / barriers
    /// its memory type needs around the access (a coherent mapping needs none beyond the
    /// transport's own ordering).
    fn with(&self, f: &mut dyn FnMut(&mut [u8]));
}

/// Read `out.len()` bytes at `off`; `InvalidArgument` if out of range.
pub fn region_read(r: &dyn DmaRegion, off: usize, out: &mut [u8]) -> Result<()> {
    let mut res = Err(FastRpcError::InvalidArgument);
    r.with(&mut |m| {
        if let Some(src) = off.checked_add(out.len()).and_then(|e| m.get(off..e)) {
            out.copy_from_slice(src);
            res = Ok(());
        }
    });
    res
}

/// Write `data` at `off`; `InvalidArgument` if out of range.
pub fn region_write(r: &dyn DmaRegion, off: usize, data: &[u8]) -> Result<()> {
    let mut res = Err(FastRpcError::InvalidArgument);
    r.with(&mut |m| {
        if let Some(dst) = off.checked_add(data.len()).and_then(|e| m.get_mut(off..e)) {
            dst.copy_from_slice(data);
            res = Ok(());
        }
    });
    res
}

/// The platform: DMA allocation per session (context bank) with its stream id.
pub trait DmaHal: Send + Sync {
    /// Allocate `size` bytes (rounded up to a page), zeroed, mapped on context bank `sid`.
    /// Only called at setup / control paths, never on the steady-state invoke path.
    fn alloc(&self, sid: u32, size: usize) -> Option<Arc<dyn DmaRegion>>;
}

/// Round `v` up to a multiple of `a` (a power of two); `None` on overflow.
pub const fn align_up(v: u64, a: u64) -> Option<u64> {
    match v.checked_add(a - 1) {
        Some(x) => Some(x & !(a - 1)),
        None => None,
    }
}

/// Pages spanned by `[addr, addr+len)` in bytes (one page for `len == 0`).
pub const fn pages_spanned(addr: u64, len: u64) -> u64 {
    let first = addr & !(PAGE_SIZE - 1);
    let last = addr.saturating_add(len.saturating_sub(1)) & !(PAGE_SIZE - 1);
    (last - first) + PAGE_SIZE
}

struct SharedInner {
    fd: i32,
    sid: u32,
    region: Arc<dyn DmaRegion>,
}

/// A buffer shared with the DSP by handle (the dma-buf role). Cloning adds a reference; the
/// mapping lives until the last one (including those held by in-flight invokes) is dropped.
#[derive(Clone)]
pub struct SharedBuf {
    inner: Arc<SharedInner>,
}

impl core::fmt::Debug for SharedBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedBuf")
            .field("fd", &self.inner.fd)
            .field("iova", &self.iova())
            .field("len", &self.len())
            .finish()
    }
}

impl SharedBuf {
    /// Wrap a region allocated on context bank `sid` under descriptor number `fd` (> 0).
    pub fn new(fd: i32, sid: u32, region: Arc<dyn DmaRegion>) -> Self {
        SharedBuf {
            inner: Arc::new(SharedInner { fd, sid, region }),
        }
    }
    /// The descriptor number the DSP sees (the fd of a dma-buf).
    pub fn fd(&self) -> i32 {
        self.inner.fd
    }
    /// Context bank the buffer is mapped on.
    pub fn sid(&self) -> u32 {
        self.inner.sid
    }
    /// Bus address of byte 0 without the session bits.
    pub fn iova(&self) -> u64 {
        self.inner.region.iova()
    }
    /// Bus address as sent to the DSP: `iova | sid << 32`.
    pub fn bus_addr(&self) -> u64 {
        self.iova() | (u64::from(self.inner.sid) << 32)
    }
    /// AP virtual address of byte 0.
    pub fn va(&self) -> u64 {
        self.inner.region.va()
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.inner.region.len()
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copy `data` in at `off`.
    pub fn write(&self, off: usize, data: &[u8]) -> Result<()> {
        region_write(&*self.inner.region, off, data)
    }
    /// Copy out at `off`.
    pub fn read(&self, off: usize, out: &mut [u8]) -> Result<()> {
        region_read(&*self.inner.region, off, out)
    }
    /// Whether two handles name the same memory (identity, not fd number: a map cache keyed by
    /// fd alone is the CVE-2022-48872 family of bugs).
    pub fn same_memory(&self, other: &SharedBuf) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
    /// References alive (this one, clones, in-flight invokes).
    pub fn refs(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_math() {
        assert_eq!(pages_spanned(0x1000, 1), 4096);
        assert_eq!(pages_spanned(0x1fff, 2), 8192);
        assert_eq!(pages_spanned(0x1000, 4096), 4096);
        assert_eq!(pages_spanned(0x1000, 0), 4096);
        assert_eq!(align_up(545, 128), Some(640));
        assert_eq!(align_up(u64::MAX, 128), None);
    }
}
