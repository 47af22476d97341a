//! [`SimHal`]: an identity-mapped DMA `Hal` for the simulated device (physical address ==
//! virtual address), and [`BounceHal`], which copies every shared buffer into separate pages the
//! way a vhost-user `MemfdHal` does, so the transport's share/unshare discipline is tested too.
//!
//! No global arena: every `dma_alloc` is its own page-aligned heap allocation, freed by
//! `dma_dealloc`. Physical address 0 is never returned (virtio-drivers treats it as failure);
//! the heap never hands out address 0.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

fn page_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.max(1).checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

fn alloc_pages(pages: usize) -> (PhysAddr, NonNull<u8>) {
    let Some(layout) = page_layout(pages) else {
        return (0, NonNull::dangling());
    };
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    match NonNull::new(p) {
        Some(nn) => (p as usize as PhysAddr, nn),
        None => (0, NonNull::dangling()),
    }
}

/// # Safety
/// `vaddr` must come from `alloc_pages(pages)` and not be freed yet.
unsafe fn free_pages(vaddr: NonNull<u8>, pages: usize) -> i32 {
    match page_layout(pages) {
        Some(layout) => {
            // SAFETY: the caller passes an allocation made with this layout.
            unsafe { dealloc(vaddr.as_ptr(), layout) };
            0
        }
        None => -1,
    }
}

/// Identity-mapped `Hal`: DMA memory and shared buffers are used in place.
#[derive(Debug)]
pub struct SimHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, exclusively owned memory whose physical
// address (its virtual address) is non-zero; `dma_dealloc` frees exactly that; `share` returns
// the buffer's own address, which the simulated device (same address space) can access.
unsafe impl Hal for SimHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        alloc_pages(pages)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller (virtio-drivers contract) passes what `dma_alloc` returned.
        unsafe { free_pages(vaddr, pages) }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Bouncing `Hal`: `share` copies the buffer into fresh pages (for driver → device) and returns
/// their address; `unshare` copies device → driver data back and frees the pages. Reading a
/// reply before `unshare`, or sharing with the wrong direction, shows up as wrong data.
#[derive(Debug)]
pub struct BounceHal;

// SAFETY: as `SimHal` for DMA memory; `share` returns the address of a private copy that lives
// until `unshare`, which the simulated device (same address space) can access.
unsafe impl Hal for BounceHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        alloc_pages(pages)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: as `SimHal::dma_dealloc`.
        unsafe { free_pages(vaddr, pages) }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        let (paddr, bounce) = alloc_pages(len.div_ceil(PAGE_SIZE));
        if paddr != 0 && direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller guarantees `buffer` is valid for reads of `len` bytes; the
            // bounce pages are at least `len` bytes and freshly allocated (no overlap).
            unsafe {
                std::ptr::copy_nonoverlapping(buffer.as_ptr() as *const u8, bounce.as_ptr(), len)
            };
        }
        paddr
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let len = buffer.len();
        let Some(bounce) = NonNull::new(paddr as usize as *mut u8) else {
            return;
        };
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce copy made by `share` for this buffer (same length),
            // still allocated; the caller guarantees `buffer` is valid for writes.
            unsafe {
                std::ptr::copy_nonoverlapping(bounce.as_ptr(), buffer.as_ptr() as *mut u8, len)
            };
        }
        // SAFETY: allocated by `share` with this page count.
        unsafe { free_pages(bounce, len.div_ceil(PAGE_SIZE)) };
    }
}
