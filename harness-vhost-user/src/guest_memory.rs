//! Guest RAM for the harness: one memfd, mapped `MAP_SHARED` into this process and handed to each
//! vhost-user daemon (which maps the whole file), plus a first-fit page allocator over it.
//!
//! Guest-physical address = `gpa_base + offset`. `gpa_base` must not be 0: virtio-drivers treats a
//! DMA address of 0 as an allocation failure.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use vhost::VhostUserMemoryRegionInfo;

/// The guest page size (virtio-drivers' `PAGE_SIZE`).
pub const PAGE_SIZE: usize = virtio_drivers::PAGE_SIZE;

/// A page bitmap: bit set = page in use.
#[derive(Debug)]
struct PageMap {
    bits: Vec<u64>,
    pages: usize,
    used: usize,
    /// Next-fit start: where the last allocation ended.
    hint: usize,
}

impl PageMap {
    fn new(pages: usize) -> Self {
        PageMap {
            bits: vec![0; pages.div_ceil(64)],
            pages,
            used: 0,
            hint: 0,
        }
    }

    fn is_used(&self, p: usize) -> bool {
        self.bits[p / 64] & (1 << (p % 64)) != 0
    }

    fn set(&mut self, p: usize, used: bool) {
        if used {
            self.bits[p / 64] |= 1 << (p % 64);
        } else {
            self.bits[p / 64] &= !(1 << (p % 64));
        }
    }

    /// First run of `n` free pages at or after the hint, wrapping once.
    fn alloc(&mut self, n: usize) -> Option<usize> {
        if n == 0 || n > self.pages - self.used {
            return None;
        }
        for start_at in [self.hint, 0] {
            let mut run_start = start_at;
            let mut run = 0;
            let mut p = start_at;
            while p < self.pages {
                if self.is_used(p) {
                    run = 0;
                    run_start = p + 1;
                } else {
                    run += 1;
                    if run == n {
                        for q in run_start..run_start + n {
                            self.set(q, true);
                        }
                        self.used += n;
                        self.hint = (run_start + n) % self.pages;
                        return Some(run_start);
                    }
                }
                p += 1;
            }
        }
        None
    }

    /// Free `n` pages at `first`; `false` (and nothing changed) if any of them was not in use.
    fn free(&mut self, first: usize, n: usize) -> bool {
        if first.checked_add(n).is_none_or(|end| end > self.pages)
            || (first..first + n).any(|p| !self.is_used(p))
        {
            return false;
        }
        for p in first..first + n {
            self.set(p, false);
        }
        self.used -= n;
        true
    }
}

/// Guest RAM backed by a memfd. Two instances are independent (each has its own file and map).
#[derive(Debug)]
pub struct GuestMemory {
    memfd: OwnedFd,
    host: NonNull<u8>,
    size: usize,
    gpa_base: u64,
    pages: Mutex<PageMap>,
}

// SAFETY: `host` points to a MAP_SHARED mapping owned by this value for its whole life; the
// allocator hands out disjoint page ranges, and each range is accessed only by its owner (the
// `Hal` user that allocated it) and the device.
unsafe impl Send for GuestMemory {}
// SAFETY: as for `Send`; the only shared mutable state, the page map, is behind a `Mutex`.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// `size` bytes (rounded up to pages) of zeroed guest RAM at guest-physical `gpa_base`.
    pub fn new(size: usize, gpa_base: u64) -> io::Result<Self> {
        let size = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if size == 0 || gpa_base == 0 || gpa_base & (PAGE_SIZE as u64 - 1) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "guest memory needs a non-zero size and a non-zero, page-aligned base",
            ));
        }
        // SAFETY: the name is a NUL-terminated C string literal; flags are valid.
        let fd = unsafe { libc::memfd_create(c"fwipc-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        File::from(memfd.try_clone()?).set_len(size as u64)?;
        // SAFETY: mapping a fresh region (addr = NULL) of a file we own and just sized; the result
        // is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let host = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(GuestMemory {
            memfd,
            host,
            size,
            gpa_base,
            pages: Mutex::new(PageMap::new(size / PAGE_SIZE)),
        })
    }

    fn map(&self) -> MutexGuard<'_, PageMap> {
        // A panic while holding the lock leaves the bitmap consistent (every update is a complete
        // loop before the lock is released), so poisoning is ignored.
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Guest-physical address of the first byte.
    pub fn gpa_base(&self) -> u64 {
        self.gpa_base
    }

    /// Host address of the first byte.
    pub fn host_base(&self) -> NonNull<u8> {
        self.host
    }

    /// Pages currently free.
    pub fn free_pages(&self) -> usize {
        let m = self.map();
        m.pages - m.used
    }

    /// Allocate `pages` contiguous zeroed pages; their guest-physical address, or `None` when
    /// guest memory is exhausted.
    pub fn alloc(&self, pages: usize) -> Option<u64> {
        let first = self.map().alloc(pages)?;
        let off = first * PAGE_SIZE;
        // SAFETY: `off .. off + pages * PAGE_SIZE` lies within the mapping (the page map only
        // covers it) and was free until now, so no one else accesses it.
        unsafe {
            self.host
                .as_ptr()
                .add(off)
                .write_bytes(0, pages * PAGE_SIZE)
        };
        Some(self.gpa_base + off as u64)
    }

    /// Free `pages` pages at `gpa`. `false` if they were not allocated (nothing is changed).
    pub fn free(&self, gpa: u64, pages: usize) -> bool {
        let Some(off) = gpa.checked_sub(self.gpa_base) else {
            return false;
        };
        if off & (PAGE_SIZE as u64 - 1) != 0 {
            return false;
        }
        self.map().free(off as usize / PAGE_SIZE, pages)
    }

    /// Host pointer for `len` bytes at guest-physical `gpa`, if the whole range is guest RAM.
    pub fn gpa_to_host(&self, gpa: u64, len: usize) -> Option<NonNull<u8>> {
        let off = usize::try_from(gpa.checked_sub(self.gpa_base)?).ok()?;
        if off.checked_add(len)? > self.size {
            return None;
        }
        // SAFETY: `off <= size`, so the result is within (or one past) the mapping.
        Some(unsafe { self.host.add(off) })
    }

    /// Host virtual address of guest-physical `gpa` as the vhost-user front-end's address space
    /// sees it (SET_VRING_ADDR carries these, not GPAs).
    pub fn gpa_to_frontend_va(&self, gpa: u64) -> Option<u64> {
        self.gpa_to_host(gpa, 0).map(|p| p.as_ptr() as u64)
    }

    /// The one memory region to send in VHOST_USER_SET_MEM_TABLE: the whole memfd.
    pub fn region_info(&self) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: self.gpa_base,
            memory_size: self.size as u64,
            userspace_addr: self.host.as_ptr() as u64,
            mmap_offset: 0,
            mmap_handle: self.memfd.as_raw_fd(),
        }
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `host`/`size` are exactly the mapping made in `new`, and no borrow of it can
        // outlive `self`.
        unsafe { libc::munmap(self.host.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_map_first_fit_and_double_free() {
        let mut m = PageMap::new(8);
        assert_eq!(m.alloc(3), Some(0));
        assert_eq!(m.alloc(3), Some(3));
        assert_eq!(m.alloc(3), None);
        assert!(m.free(0, 3));
        assert!(!m.free(0, 3), "double free must be refused");
        assert!(!m.free(7, 2), "out of range");
        // Next fit: continues after the last allocation, then wraps to the freed hole.
        assert_eq!(m.alloc(2), Some(6));
        assert_eq!(m.alloc(1), Some(0));
        assert_eq!(m.alloc(2), Some(1));
        assert_eq!(m.alloc(1), None);
        assert_eq!(m.used, 8);
    }

    #[test]
    fn two_instances_are_independent() {
        let a = GuestMemory::new(4 * PAGE_SIZE, 0x1000_0000).unwrap();
        let b = GuestMemory::new(4 * PAGE_SIZE, 0x1000_0000).unwrap();
        let ga = a.alloc(1).unwrap();
        let gb = b.alloc(1).unwrap();
        assert_eq!(ga, gb);
        let pa = a.gpa_to_host(ga, 4).unwrap();
        let pb = b.gpa_to_host(gb, 4).unwrap();
        // SAFETY: both pointers are to pages just allocated above, private to this test.
        unsafe {
            pa.as_ptr().write(0xAA);
            assert_eq!(pb.as_ptr().read(), 0, "instances share no memory");
        }
        assert_eq!(a.free_pages(), 3);
        assert_eq!(b.free_pages(), 3);
        assert!(a.free(ga, 1));
        assert!(!a.free(ga + 1, 1), "unaligned");
        assert!(!a.free(0, 1), "below base");
        assert!(a
            .gpa_to_host(0x1000_0000 + 4 * PAGE_SIZE as u64, 1)
            .is_none());
    }

    #[test]
    fn rejects_zero_base() {
        assert!(GuestMemory::new(PAGE_SIZE, 0).is_err());
    }
}
